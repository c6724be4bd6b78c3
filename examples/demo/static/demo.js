// Keeps the demo page current without reloads: the buttons enqueue with
// fetch, and /status is polled to redraw the queue size and the job list.
// Data goes into the page as textContent only, never as HTML.
"use strict";

const POLL_MS = 500;

const statusUrl = document.body.dataset.statusUrl;
const form = document.getElementById("enqueue-form");
const queueSize = document.getElementById("queue-size");
const running = document.getElementById("running");
const jobList = document.getElementById("jobs");
const noJobs = document.getElementById("no-jobs");
const rowTemplate = document.getElementById("job-row");
const notice = document.getElementById("notice");

function render(state) {
  queueSize.textContent = String(state.queue_size);
  running.textContent = String(state.running);
  jobList.replaceChildren(...state.jobs.map(jobRow));
  noJobs.hidden = state.jobs.length > 0;
}

function jobRow(job) {
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  row.dataset.status = job.status;
  row.querySelector(".job-id").textContent = "#" + job.id.slice(-6);
  row.querySelector(".job-status").textContent = job.status;
  row.querySelector(".job-detail").textContent = job.detail;
  const bar = row.querySelector("progress");
  if (job.percent === null) {
    bar.removeAttribute("value"); // indeterminate until the first report
  } else {
    bar.value = job.percent;
  }
  return row;
}

async function enqueue(count) {
  try {
    const response = await fetch(form.action, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ count }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      notice.textContent = body.error ?? `The server answered ${response.status}.`;
      return;
    }
    notice.textContent = "";
    render(await response.json());
  } catch {
    notice.textContent = "Could not reach the server.";
  }
}

async function poll() {
  try {
    const response = await fetch(statusUrl);
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    render(await response.json());
    if (notice.dataset.lost) {
      notice.textContent = "";
      delete notice.dataset.lost;
    }
  } catch {
    notice.textContent = "Lost contact with the server; trying again.";
    notice.dataset.lost = "yes";
  }
  setTimeout(poll, POLL_MS);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  enqueue(Number(event.submitter?.value ?? 1));
});

setTimeout(poll, POLL_MS);
