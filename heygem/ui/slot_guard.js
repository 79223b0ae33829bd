// Words a person can act on when a file goes into the wrong slot of the Generate tab (studio.py), in place of
// Gradio's own "Invalid file type: photo.png. Only video/x-m4v,video/* allowed." toast, after which it drops the file.
// The file is judged by its type here only to say what it looks like; the server judges every accepted file by its
// content. The words stay under the slot until a file of the right kind goes in.
if (!window.hgSlotGuard) {
  window.hgSlotGuard = true;
  const SLOTS = {
    "hg-speech": { wants: "audio", other: "hg-video" },
    "hg-video": { wants: "video", other: "hg-speech" },
  };
  const EXTENSIONS = {
    audio: ["wav", "mp3", "m4a", "aac", "flac", "ogg", "oga", "opus", "wma", "amr"],
    video: ["mp4", "mov", "webm", "mkv", "avi", "m4v", "3gp", "mpeg", "mpg", "ts"],
    photo: ["png", "jpg", "jpeg", "webp", "heic", "heif", "gif", "bmp", "tif", "tiff", "avif"],
  };
  const refusedKind = {};

  const kindOf = (file) => {
    const major = (file.type || "").split("/")[0];
    if (major === "audio" || major === "video") return major;
    if (major === "image") return "photo";
    const extension = (file.name.split(".").pop() || "").toLowerCase();
    return Object.keys(EXTENSIONS).find((kind) => EXTENSIONS[kind].includes(extension)) || "other";
  };

  const words = (slotId, kind, name) => {
    const otherRefused = refusedKind[SLOTS[slotId].other];
    if ((kind === "video" && otherRefused === "audio") || (kind === "audio" && otherRefused === "video")) {
      return "These two look swapped: the speech recording goes in 1 (Speech) and the video of the person in " +
        "2 (Video). Put each file in its place.";
    }
    if (slotId === "hg-speech") {
      if (kind === "video") return `“${name}” is a video, not a speech recording: it belongs in 2 (Video). ` +
        "Here, put a recording of the speech (WAV, MP3, M4A…) or use the microphone.";
      if (kind === "photo") return `“${name}” is a photo; this slot needs a recording of the speech ` +
        "(WAV, MP3, M4A…), or use the microphone.";
      return `“${name}” is not a sound recording; this slot needs the speech (WAV, MP3, M4A…).`;
    }
    if (kind === "audio") return `“${name}” is a sound recording, not a video: it belongs in 1 (Speech). ` +
      "Here, put a video of the person facing the camera (MP4, MOV, WebM…).";
    if (kind === "photo") return `“${name}” is a photo; this slot needs a video of the person facing the camera: ` +
      "a few seconds filmed with a phone is enough (MP4, MOV, WebM…). A single photo cannot be animated here.";
    return `“${name}” is not a video; this slot needs a video of the person facing the camera (MP4, MOV, WebM…).`;
  };

  // Into the slot's own note (studio.py), which only the server's words replace.
  const say = (slotId, text) => {
    const note = document.getElementById(`${slotId}-note`);
    let box = document.getElementById(`${slotId}-guard`);
    if (!text) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = document.createElement("div");
      box.id = `${slotId}-guard`;
      box.className = "hg-slot-error";
      box.setAttribute("role", "alert");
      note.prepend(box);
    }
    box.textContent = text;
  };

  // Before Gradio's own handlers (capture, on the document): a file of the wrong kind never reaches them.
  const check = (event, files) => {
    const slot = event.target.closest && event.target.closest("#hg-speech, #hg-video");
    if (!slot || !files || !files.length) return;
    const file = files[0];  // the list empties with the input's value, below
    const kind = kindOf(file);
    if (kind === SLOTS[slot.id].wants) {
      delete refusedKind[slot.id];
      say(slot.id, "");
      return;
    }
    event.stopImmediatePropagation();
    event.preventDefault();
    if (event.target.value !== undefined && event.target.type === "file") event.target.value = "";
    say(slot.id, words(slot.id, kind, file.name));
    refusedKind[slot.id] = kind;
  };
  // Playwright and browsers send "input" then "change"; Gradio's upload listens to one of them.
  for (const type of ["input", "change"]) {
    document.addEventListener(type, (event) => check(event, event.target.files), true);
  }
  document.addEventListener("drop", (event) => check(event, event.dataTransfer && event.dataTransfer.files), true);
}
