// The studio's live preview (heygem/ui/live.py). props.value is the playlist URL of the task being rendered, or ""
// when there is nothing to play. It plays with the hls.js build Gradio's own video player uses (props.hls_module),
// or natively where the browser plays HLS itself and has no Media Source Extensions (iPhone Safari). When the
// stream goes away because its task ended, the final video takes over where the viewer was.
let video = null;
let url = "";
let hls = null;
let position = 0;
const hlsModule = props.hls_module
  ? import(new URL(props.hls_module, document.baseURI).href).catch(() => null)
  : Promise.resolve(null);

// Gradio's bundle exports its player under minified names: attach(video, url, onParsed) and isSupported().
function hlsAttach(module) {
  const functions = module ? Object.values(module).filter((item) => typeof item === "function") : [];
  const attach = functions.find((item) => item.length === 3);
  const supported = functions.find((item) => item.length === 0);
  return attach && supported && supported() ? attach : null;
}

// Browsers refuse to start sound without a click on the page (after a reload, from a link): then it plays muted.
function play(target) {
  target.play().catch(() => {
    target.muted = true;
    return target.play();
  }).catch(() => {});
}

function taskOf(playlist) {
  return new URL(playlist, document.baseURI).pathname.split("/").slice(-2)[0];
}

async function start(target, playlist) {
  video = target;
  url = playlist;
  position = 0;
  target.ontimeupdate = () => { position = target.currentTime; };
  const attach = hlsAttach(await hlsModule);
  if (video !== target || url !== playlist) return;  // replaced while the module loaded
  if (attach) {
    hls = attach(target, new URL(playlist, document.baseURI).href, () => play(target));
  } else if (target.canPlayType("application/vnd.apple.mpegurl")) {
    target.src = playlist;
    play(target);
  } else {
    element.querySelector(".hg-live-note").textContent =
      "This browser cannot play the live preview; the video appears here when it is done.";
  }
}

function stop() {
  if (hls) hls.destroy();
  else if (video) video.removeAttribute("src");
  hls = null;
  video = null;
  url = "";
}

// The task ended and its result appears in the result area: continue there, if it is still the task on show.
function handOver(code, seconds) {
  let tries = 50;
  const timer = setInterval(() => {
    const result = document.querySelector("#hg-result video");
    const shown = new URL(window.location.href).searchParams.get("code");
    if (shown !== code || --tries <= 0) {
      clearInterval(timer);
    } else if (result && result.currentSrc && result.readyState >= 1) {
      clearInterval(timer);
      result.currentTime = Math.min(seconds, result.duration || seconds);
      play(result);
    }
  }, 200);
}

function sync() {
  const target = element.querySelector("video.hg-live-video");
  const wanted = target ? target.dataset.src : "";
  if (target === video && wanted === url) return;
  const ended = url && !target ? taskOf(url) : "";
  const at = position;
  stop();
  if (ended && at > 0) handOver(ended, at);
  if (target) start(target, wanted);
}

watch("value", sync);
sync();
