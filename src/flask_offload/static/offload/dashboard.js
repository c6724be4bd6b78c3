// Flask-Offload dashboard: keeps the overview's numbers current by polling
// the stats endpoint. It writes text and builds elements only, never HTML,
// because task names and progress messages come from the app's jobs.
(function () {
  "use strict";

  var body = document.body;
  var statsUrl = body.dataset.statsUrl;
  var pollMs = Math.max(500, Number(body.dataset.pollSeconds || "2") * 1000);
  var live = document.getElementById("live");
  var runningList = document.getElementById("running");
  var noneRunning = document.getElementById("none-running");
  var newQueues = document.getElementById("new-queues");
  var chart = document.getElementById("throughput");
  var SVG = "http://www.w3.org/2000/svg";

  if (!statsUrl) {
    return;
  }

  function setText(element, value) {
    var text = String(value);
    if (element.textContent !== text) {
      element.textContent = text;
    }
  }

  function updateCounts(data) {
    var shown = {};
    document.querySelectorAll("[data-queue][data-status]").forEach(function (cell) {
      var queue = cell.dataset.queue;
      var byStatus = data.queues[queue] || {};
      shown[queue] = true;
      setText(cell, byStatus[cell.dataset.status] || 0);
    });
    document.querySelectorAll("[data-total]").forEach(function (cell) {
      setText(cell, data.totals[cell.dataset.total] || 0);
    });
    var unseen = Object.keys(data.queues).some(function (queue) {
      return !shown[queue];
    });
    newQueues.hidden = !unseen;
  }

  function progressText(job) {
    if (job.done === null) {
      return "no progress reported";
    }
    var text = String(job.done);
    if (job.total) {
      text += " / " + job.total;
    }
    if (job.message) {
      text += " · " + job.message;
    }
    return text;
  }

  function runningItem(job) {
    var item = document.createElement("li");
    var link = document.createElement("a");
    link.className = "job-id";
    link.href = job.url;
    link.textContent = job.id;
    var task = document.createElement("span");
    task.className = "task";
    task.textContent = job.task;
    var queue = document.createElement("span");
    queue.className = "muted";
    queue.textContent = "on " + job.queue;
    var progress = document.createElement("div");
    progress.className = "progress";
    var bar = document.createElement("progress");
    if (job.fraction !== null) {
      bar.max = 1;
      bar.value = job.fraction;
    }
    var label = document.createElement("span");
    label.className = "progress-text";
    label.textContent = progressText(job);
    progress.append(bar, label);
    item.append(link, " ", task, " ", queue, progress);
    return item;
  }

  function updateRunning(data) {
    runningList.replaceChildren.apply(runningList, data.running.map(runningItem));
    noneRunning.hidden = data.running.length > 0;
  }

  function twoDigits(number) {
    return (number < 10 ? "0" : "") + number;
  }

  function barHeight(count, scale) {
    return count === 0 ? 0 : Math.max(1, Math.round(count * scale * 100) / 100);
  }

  // Redraws the chart as the page drew it: per minute a succeeded bar with
  // the failed one stacked on it, scaled to the busiest minute.
  function updateThroughput(data) {
    var minutes = data.throughput || [];
    if (!chart || minutes.length === 0) {
      return;
    }
    var box = chart.viewBox.baseVal;
    var step = box.width / minutes.length;
    var barWidth = Number(chart.dataset.barWidth);
    var busiest = minutes.reduce(function (most, minute) {
      return Math.max(most, minute.succeeded + minute.failed);
    }, 0);
    var scale = (box.height - 4) / Math.max(busiest, 1);
    var groups = minutes.map(function (minute, number) {
      var when = new Date(minute.start * 1000);
      var succeeded = barHeight(minute.succeeded, scale);
      var failed = barHeight(minute.failed, scale);
      var group = document.createElementNS(SVG, "g");
      var title = document.createElementNS(SVG, "title");
      title.textContent = twoDigits(when.getUTCHours()) + ":" +
        twoDigits(when.getUTCMinutes()) + " UTC: " + minute.succeeded +
        " succeeded, " + minute.failed + " failed";
      group.append(title);
      [["bar-succeeded", box.height - succeeded, succeeded],
        ["bar-failed", box.height - succeeded - failed, failed]].forEach(function (bar) {
        var rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("class", bar[0]);
        rect.setAttribute("x", String(number * step + 1));
        rect.setAttribute("y", String(bar[1]));
        rect.setAttribute("width", String(barWidth));
        rect.setAttribute("height", String(bar[2]));
        group.append(rect);
      });
      return group;
    });
    chart.replaceChildren.apply(chart, groups);
    var last = minutes[minutes.length - 1];
    setText(document.getElementById("throughput-succeeded"), last.succeeded);
    setText(document.getElementById("throughput-failed"), last.failed);
    setText(document.getElementById("throughput-busiest"), busiest);
  }

  function poll() {
    fetch(statsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        updateCounts(data);
        updateRunning(data);
        updateThroughput(data);
        setText(live, "updated " + new Date().toLocaleTimeString());
      })
      .catch(function () {
        setText(live, "not updating: the server did not answer");
      })
      .finally(function () {
        window.setTimeout(poll, pollMs);
      });
  }

  window.setTimeout(poll, pollMs);
})();
