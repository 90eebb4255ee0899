// The lineage page's merge action: "Merge checkpoints…" shows a checkbox for each run's
// checkpoints (stage ends, and those the family forks or merges from); with two or more
// picked, "Merge" opens the fork page of the first picked stage end (else the first pick) with
// a new stage that starts from the average of the picked models (init_merge, equal weights,
// edited there before the run is created).
const start = document.getElementById("merge-start");
const bar = document.getElementById("merge-bar");
const go = document.getElementById("merge-go");
const status = document.getElementById("merge-status");
const boxes = [...document.querySelectorAll('input[name="merge-pick"]')];
const order = []; // picked checkboxes in the order they were picked

// The fork page's URL for the picked checkpoints, or null with fewer than two.
export function mergeUrl(picked) {
  if (picked.length < 2) return null;
  const base = picked.find((b) => b.dataset.stageEnd === "1") || picked[0];
  const ids = picked.map((b) => b.value).join(",");
  return `/runs/${base.dataset.run}/fork/${base.value}/?merge=${ids}`;
}

function update() {
  const n = order.length;
  go.disabled = n < 2;
  const names = order.map((b) => `#${b.dataset.run} @${b.dataset.step}`).join(" + ");
  status.textContent = n === 0 ? "Pick two or more checkpoints to merge."
    : n === 1 ? `Picked ${names}; pick at least one more.` : `Merge ${names} (equal weights).`;
}

start.addEventListener("click", () => {
  const on = bar.hidden;
  bar.hidden = !on;
  for (const el of document.querySelectorAll(".merge-picks")) el.hidden = !on;
  start.textContent = on ? "Cancel merge" : "Merge checkpoints…";
});

for (const box of boxes) {
  box.addEventListener("change", () => {
    const at = order.indexOf(box);
    if (box.checked && at < 0) order.push(box);
    if (!box.checked && at >= 0) order.splice(at, 1);
    update();
  });
}

go.addEventListener("click", () => {
  const url = mergeUrl(order);
  if (url) window.location.href = url;
});
update();
