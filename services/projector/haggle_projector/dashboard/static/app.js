// Haggle dashboard: keeps a server-rendered page current from the job's server-sent events.
// The server sends rows and labels already formatted; this script only places text (always via
// textContent: provider names and transcripts are untrusted) and never re-computes state.
(() => {
  "use strict";

  const main = document.querySelector("main[data-feed]");
  if (!main) return;

  const page = main.dataset.page;
  const jobId = main.dataset.jobId;
  const live = document.getElementById("live");
  const seen = new Set();
  document.querySelectorAll("[data-event-id]").forEach((el) => seen.add(el.dataset.eventId));

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setLive(state, text) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  function nearBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }

  function providerNodes(id) {
    return Array.from(document.querySelectorAll("[data-provider-id]")).filter((n) => n.dataset.providerId === id);
  }

  function newRow(row) {
    const tbody = document.querySelector("#providers tbody");
    if (!tbody) return null;
    const tr = el("tr");
    tr.dataset.providerId = row.id;
    document.querySelectorAll("#providers thead th[data-field]").forEach((th) => {
      const td = el("td");
      td.dataset.field = th.dataset.field;
      td.dataset.label = th.textContent;
      if (th.dataset.field === "name") {
        const a = el("a", "", row.name);
        a.href = "/ui/jobs/" + encodeURIComponent(jobId) + "/calls/" + encodeURIComponent(row.id);
        td.appendChild(a);
      }
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
    return tr;
  }

  function updateCells(node, cells) {
    node.querySelectorAll("[data-field]").forEach((cell) => {
      const text = cells[cell.dataset.field];
      if (text !== undefined && cell.textContent !== text) {
        cell.textContent = text;
        cell.classList.remove("flash");
        void cell.offsetWidth; // restart the highlight animation
        cell.classList.add("flash");
      }
    });
  }

  function onRow(row) {
    let nodes = providerNodes(row.id);
    if (nodes.length === 0 && page === "job") nodes = [newRow(row)].filter(Boolean);
    for (const node of nodes) {
      node.dataset.status = row.status;
      node.dataset.outcome = row.outcome;
      node.dataset.terminal = row.terminal ? "true" : "false";
      updateCells(node, row.cells);
    }
  }

  function onJob(job) {
    const status = document.getElementById("job-status");
    if (status) {
      status.dataset.status = job.status;
      status.textContent = job.label;
    }
    const costLine = document.getElementById("job-cost");
    if (costLine && job.cost) {
      for (const key of ["total", "calls", "per_dollar_saved"]) {
        const part = costLine.querySelector('[data-cost="' + key + '"]');
        if (part && part.textContent !== job.cost[key]) part.textContent = job.cost[key];
      }
    }
    const cancel = document.querySelector("#job-actions form.cancel");
    if (cancel && job.status !== "running") cancel.remove();
    const banner = document.getElementById("best");
    const bestId = job.best ? job.best.provider_id : null;
    if (banner) {
      banner.hidden = !job.best;
      if (job.best) {
        for (const key of ["name", "price", "saving"]) {
          const part = banner.querySelector('[data-best="' + key + '"]');
          if (part) part.textContent = job.best[key];
        }
      }
    }
    document.querySelectorAll("#providers tbody tr").forEach((tr) => {
      tr.classList.toggle("best", tr.dataset.providerId === bestId);
    });
  }

  function addActivity(item) {
    const list = document.getElementById("activity");
    if (!list) return;
    const li = el("li");
    li.dataset.eventId = item.id;
    li.appendChild(el("time", "", item.at));
    li.appendChild(document.createTextNode(" "));
    if (item.who) li.appendChild(el("b", "", item.who + " "));
    li.appendChild(el("span", "", item.type + (item.text ? ": " + item.text : "")));
    list.insertBefore(li, list.firstChild);
    const limit = Number(list.dataset.limit || 12);
    while (list.children.length > limit) list.removeChild(list.lastChild);
  }

  function addTimeline(item) {
    const list = document.getElementById("timeline");
    if (!list) return;
    const stick = nearBottom(list);
    const li = el("li");
    li.dataset.eventId = item.id;
    li.dataset.type = item.type;
    if (item.seq !== null) li.dataset.seq = item.seq;
    li.appendChild(el("time", "", item.at));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("b", "", item.type));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "", item.text));
    list.appendChild(li);
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function attemptBox(chat, attempt) {
    const boxes = Array.from(chat.querySelectorAll(".attempt"));
    const found = boxes.find((b) => Number(b.dataset.attempt) === attempt);
    if (found) return found;
    const box = el("div", "attempt");
    box.dataset.attempt = attempt;
    box.appendChild(el("h3", "", "Call attempt " + attempt));
    const after = boxes.find((b) => Number(b.dataset.attempt) > attempt);
    chat.insertBefore(box, after || null);
    return box;
  }

  function addUtterance(u) {
    const chat = document.getElementById("chat");
    if (!chat) return;
    if (Array.from(chat.querySelectorAll("[data-uid]")).some((n) => n.dataset.uid === u.id)) return;
    const stick = nearBottom(chat);
    const agent = u.role === "assistant";
    const msg = el("div", "msg " + (agent ? "agent" : "provider"));
    msg.dataset.uid = u.id;
    msg.dataset.attempt = u.attempt;
    msg.dataset.seq = u.seq;
    const who = el("span", "who", agent ? "Haggle" : main.dataset.providerName || "Provider");
    if (u.at) {
      const time = el("time", "offset", u.offset || u.at);
      time.title = u.at + " UTC";
      who.appendChild(document.createTextNode(" "));
      who.appendChild(time);
    }
    msg.appendChild(who);
    const p = el("p", "", u.text);
    if (u.interrupted) p.appendChild(el("span", "cut", " (interrupted)"));
    msg.appendChild(p);
    const box = attemptBox(chat, u.attempt);
    const later = Array.from(box.querySelectorAll(".msg")).find((m) => Number(m.dataset.seq) > u.seq);
    box.insertBefore(msg, later || null);
    if (stick) chat.scrollTop = chat.scrollHeight;
  }

  function jobCells(tr, row) {
    tr.dataset.state = row.state;
    updateCells(tr, row.cells);
  }

  function newJobRow(row) {
    const tbody = document.querySelector("#jobs tbody");
    if (!tbody) return null;
    const tr = el("tr");
    tr.dataset.jobId = row.job_id;
    tr.dataset.created = row.created;
    document.querySelectorAll("#jobs thead th[data-field]").forEach((th) => {
      const td = el("td");
      td.dataset.label = th.textContent;
      td.dataset.field = th.dataset.field;
      if (th.dataset.field === "job") {
        const a = el("a", "", row.problem);
        a.href = "/ui/jobs/" + encodeURIComponent(row.job_id);
        td.appendChild(a);
        td.appendChild(el("small", "id", row.job_id));
      }
      tr.appendChild(td);
    });
    // Newest first, as the server orders the list.
    const later = Array.from(tbody.children).find((other) => (other.dataset.created || "") < row.created);
    tbody.insertBefore(tr, later || tbody.firstChild);
    const empty = document.getElementById("no-jobs");
    if (empty) empty.hidden = true;
    return tr;
  }

  function onJobRow(row) {
    if (page !== "jobs") return;
    const found = Array.from(document.querySelectorAll("#jobs tbody tr")).find((tr) => tr.dataset.jobId === row.job_id);
    const tr = found || newJobRow(row);
    if (tr) jobCells(tr, row);
  }

  function addRecording(r) {
    const box = document.getElementById("recordings");
    if (!box) return;
    const list = box.querySelector("ul");
    if (Array.from(list.children).some((li) => li.dataset.recordingSid === r.sid)) return;
    const li = el("li");
    li.dataset.recordingSid = r.sid;
    if (r.src) {
      const audio = el("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = r.src;
      li.appendChild(audio);
    }
    li.appendChild(el("span", "", r.label));
    list.appendChild(li);
    box.hidden = false;
  }

  function onItem(item) {
    if (seen.has(item.id)) return;
    seen.add(item.id);
    if (page === "job") addActivity(item);
    if (page === "call") {
      addTimeline(item);
      if (item.utterance) addUtterance(item.utterance);
      if (item.recording) addRecording(item.recording);
    }
  }

  function handler(fn) {
    return (message) => {
      try {
        fn(JSON.parse(message.data));
      } catch (err) {
        console.error("haggle: bad feed message", err);
      }
    };
  }

  // Forms that stop something ask first (a plain form without the script just submits).
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  const source = new EventSource(main.dataset.feed);
  source.addEventListener("jobrow", handler(onJobRow));
  source.addEventListener("item", handler(onItem));
  source.addEventListener("row", handler(onRow));
  source.addEventListener("job", handler(onJob));
  source.addEventListener("ready", () => setLive("live", "live"));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) setLive("closed", "disconnected: reload the page");
    else setLive("connecting", "reconnecting…");
  });
  window.addEventListener("pagehide", () => source.close());
})();
