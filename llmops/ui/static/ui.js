// llmops web UI: small progressive enhancements; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A running playground call can take a while: say so, and keep a second click from starting another.
  for (const form of document.querySelectorAll("form[data-running]")) {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      if (button) {
        button.disabled = true;
        button.textContent = form.dataset.running;
      }
    });
  }
  // The compare button says how many runs are ticked.
  const boxes = document.querySelectorAll("input[type=checkbox][name=runs]");
  const compare = boxes.length ? boxes[0].form.querySelector("button[type=submit]") : null;
  if (compare) {
    const update = () => {
      const n = [...boxes].filter((b) => b.checked).length;
      compare.textContent = n ? `Compare ${n} ticked run${n === 1 ? "" : "s"}` : "Compare ticked runs";
    };
    boxes.forEach((b) => b.addEventListener("change", update));
    update();
  }
});
