// Dataset upload through XHR so the progress bar can follow the bytes sent.
import { csrfToken } from "./api.js";
import { fmtBytes, pageData } from "./dom.js";

const { max_bytes: maxBytes } = pageData();
const form = document.getElementById("upload-form");
const bar = document.getElementById("upload-bar");
const status = document.getElementById("upload-status");

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const file = form.elements.file.files[0];
  if (!file) { status.textContent = "Choose a file to upload."; return; }
  if (file.size > maxBytes) { status.textContent = `The file is ${fmtBytes(file.size)}; the limit is ${fmtBytes(maxBytes)}.`; return; }
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/datasets/upload/");
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  xhr.upload.onprogress = (ev) => {
    if (!ev.lengthComputable) return;
    bar.style.width = `${((ev.loaded / ev.total) * 100).toFixed(1)}%`;
    status.textContent = `Uploading… ${fmtBytes(ev.loaded)} of ${fmtBytes(ev.total)}`;
  };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { body = { detail: `upload failed (${xhr.status})` }; }
    if (xhr.status >= 400) { bar.style.width = "0"; status.textContent = `Upload failed: ${body.detail}`; return; }
    status.textContent = body.created ? `Stored ${body.dataset} v${body.version} (${body.records} records).`
      : `Same content as ${body.dataset} v${body.version}; nothing new stored.`;
    setTimeout(() => window.location.reload(), 800);
  };
  xhr.onerror = () => { status.textContent = "Upload failed: the connection was lost."; };
  xhr.send(new FormData(form));
});
