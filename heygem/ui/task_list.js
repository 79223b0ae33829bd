// The Tasks tab's list (studio.py, views.task_list_html): clicking a task, or Enter on it, selects it for the buttons
// below, by writing its code into the "Selected task" box; the choice stays marked across the list's refreshes.
const box = () => document.querySelector("#hg-selected textarea, #hg-selected input");

function mark() {
  const chosen = box() ? box().value.trim() : "";
  element.querySelectorAll("tr[data-code]").forEach((row) => {
    row.classList.toggle("hg-picked", row.dataset.code === chosen);
  });
}

function pick(event) {
  const row = event.target.closest("tr[data-code]");
  if (!row || !box() || (event.type === "keydown" && event.key !== "Enter")) return;
  box().value = row.dataset.code;
  box().dispatchEvent(new Event("input", { bubbles: true }));
  mark();
}

element.addEventListener("click", pick);
element.addEventListener("keydown", pick);
watch("value", () => setTimeout(mark, 0));
