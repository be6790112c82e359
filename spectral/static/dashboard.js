// The spectral dashboard: plain JavaScript, no framework, nothing loaded from elsewhere.
// It speaks only to the server that served it: the HTTP API with the key in X-API-Key,
// and WebSockets (rooms, the admin feed, a task's watch) with short-lived watch tokens.
"use strict";

(() => {
  const KEY_STORAGE = "spectral.apiKey";
  const PAGE_SIZE = 50;
  const STATUSES = ["pending", "in-progress", "success", "failed", "canceled"];
  const TERMINAL = new Set(["success", "failed", "canceled"]);
  const EVENT_TYPES = ["all", "progress", "completed", "failed", "canceled"];
  const ROLES = ["reader", "service", "admin"];
  const HISTORY_PAGE = 50;

  const $ = (id) => document.getElementById(id);
  const state = { key: null, me: null, cleanup: [], health: null };
  // What tests (and curious people) can read: where the live connection stands.
  const probe = (window.__dashboard = {
    live: "off", connections: 0, drops: 0, fetches: 0, taskSocket: "off",
    taskSeqs: [],
  });

  // -- small helpers -----------------------------------------------------------------------

  /** An element with attributes (on* are listeners) and children (strings become text). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(el.dataset, value);
      else if (value === true) el.setAttribute(name, "");
      else el.setAttribute(name, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function text(value, fallback = "—") {
    if (value === null || value === undefined || value === "") return fallback;
    if (typeof value === "number") return Number.isFinite(value) ? String(value) : fallback;
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function percent(value) {
    const n = Number(value);
    if (!Number.isFinite(n)) return "0%";
    return `${Math.round(Math.min(Math.max(n, 0), 100) * 10) / 10}%`;
  }

  function progressValue(value) {
    const n = Number(value);
    return Number.isFinite(n) ? Math.min(Math.max(n, 0), 100) : 0;
  }

  function when(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "—";
    const now = new Date();
    if (date.toDateString() === now.toDateString()) return date.toLocaleTimeString();
    return date.toLocaleString();
  }

  function duration(seconds) {
    const s = Math.floor(Number(seconds));
    if (!Number.isFinite(s) || s < 0) return "—";
    const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
    const mm = Math.floor((s % 3600) / 60), ss = s % 60;
    if (d) return `${d}d ${hh}h`;
    if (hh) return `${hh}h ${mm}m`;
    if (mm) return `${mm}m ${ss}s`;
    return `${ss}s`;
  }

  function badge(status) {
    const word = text(status, "unknown");
    return h("span", { class: `badge s-${word}` }, word);
  }

  function progressCell(value, label) {
    const bar = h("progress", { max: "100", "aria-label": label });
    bar.value = progressValue(value);
    return h("span", { class: "progress" }, bar, h("span", { class: "pct" }, percent(value)));
  }

  function setProgress(container, value) {
    const bar = container.querySelector("progress");
    if (bar) bar.value = progressValue(value);
    const pct = container.querySelector(".pct");
    if (pct) pct.textContent = percent(value);
  }

  function wsUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function jittered(attempt) {
    const base = Math.min(10000, 250 * 2 ** Math.min(attempt, 6));
    return base / 2 + Math.random() * (base / 2);
  }

  function onCleanup(fn) {
    state.cleanup.push(fn);
  }

  function runCleanup() {
    const fns = state.cleanup;
    state.cleanup = [];
    for (const fn of fns) {
      try {
        fn();
      } catch (error) {
        console.warn(error);
      }
    }
  }

  // -- the API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    toString() {
      return this.status ? `${this.message} (${this.code}, ${this.status})` : this.message;
    }
  }

  async function api(method, path, body, options = {}) {
    const key = options.anonymous ? null : options.key || state.key;
    const headers = {};
    if (key) headers["X-API-Key"] = key;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    probe.fetches += 1;
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "NETWORK", "The server cannot be reached.");
    }
    const raw = await response.text();
    let data = null;
    if (raw) {
      try {
        data = JSON.parse(raw);
      } catch (error) {
        data = raw;
      }
    }
    if (!response.ok) {
      const found = data && typeof data === "object" && data.error ? data.error : {};
      const error = new ApiError(
        response.status,
        text(found.code, `HTTP_${response.status}`),
        text(found.message, response.statusText || "The request failed."),
      );
      if (response.status === 401 && !options.key && !options.anonymous && state.key) {
        refused(error);
      }
      throw error;
    }
    return data;
  }

  function query(params) {
    const parts = [];
    for (const [name, value] of Object.entries(params)) {
      if (value === null || value === undefined || value === "") continue;
      for (const one of Array.isArray(value) ? value : [value]) {
        parts.push(`${encodeURIComponent(name)}=${encodeURIComponent(one)}`);
      }
    }
    return parts.length ? `?${parts.join("&")}` : "";
  }

  const isAdmin = () => state.me && state.me.role === "admin";
  const canWrite = () => state.me && state.me.role !== "reader";

  // -- sign-in -----------------------------------------------------------------------------

  /** Who the key belongs to: GET /me. */
  async function whoAmI(key) {
    return api("GET", "/me", undefined, { key });
  }

  async function signIn(key) {
    const me = await whoAmI(key);
    state.key = key;
    state.me = me;
    sessionStorage.setItem(KEY_STORAGE, key);
    showSignedIn();
  }

  function signOut(message) {
    runCleanup();
    state.key = null;
    state.me = null;
    Object.assign(filters, { status: "", q: "", owner: "", tags: [], page: 1 });
    sessionStorage.removeItem(KEY_STORAGE);
    $("view").replaceChildren();
    $("nav").hidden = true;
    $("who").hidden = true;
    $("who-text").textContent = "";
    $("signin").hidden = false;
    setLive("");
    const error = $("signin-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("api-key").value = "";
    $("api-key").focus();
  }

  function refused(error) {
    signOut(`Signed out: the server refused the key: ${error}`);
  }

  function showSignedIn() {
    const me = state.me;
    $("signin").hidden = true;
    $("signin-error").hidden = true;
    $("nav").hidden = false;
    $("who").hidden = false;
    $("nav-keys").hidden = !isAdmin();
    $("nav-webhooks").hidden = !canWrite();
    const name = me.name ? ` · ${me.name}` : "";
    $("who-text").textContent = `${text(me.owner)} (${text(me.role)})${name}`;
    route();
  }

  // -- the status strip --------------------------------------------------------------------

  async function refreshHealth() {
    try {
      const health = await api("GET", "/health", undefined, { anonymous: true });
      const actors = health.actors || {};
      $("health").textContent =
        `spectral ${text(health.version)} · ${text(health.status)} · up ` +
        `${duration(health.uptimeSeconds)} · ${text(actors.live, "0")} live actors · ` +
        `${text(health.connections, "0")} connections`;
    } catch (error) {
      $("health").textContent = `Server unreachable: ${error}`;
    }
  }

  function setLive(words) {
    $("live").textContent = words;
  }

  // -- a WebSocket that reconnects ---------------------------------------------------------

  /**
   * Keeps one socket open: ``connect()`` resolves to its URL (a fresh token each time),
   * ``onMessage`` gets each parsed message, ``onOpen`` runs at each (re)connection, and
   * ``final(code)`` says whether a close ends it for good (returning a reason to show).
   */
  function reconnecting({ connect, onMessage, onOpen, final, label, onState }) {
    let socket = null, timer = null, attempt = 0, stopped = false;
    const report = (words, phase) => {
      if (onState) onState(phase);
      setLive(`${label}: ${words}`);
    };
    const schedule = () => {
      if (stopped) return;
      const delay = jittered(attempt++);
      report(`reconnecting in ${(delay / 1000).toFixed(1)} s`, "waiting");
      timer = setTimeout(open, delay);
    };
    async function open() {
      timer = null;
      if (stopped) return;
      report("connecting…", "connecting");
      let url;
      try {
        url = await connect();
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403 ||
            error.status === 404)) {
          report(`stopped: ${error}`, "failed");
          return;
        }
        schedule();
        return;
      }
      if (stopped) return;
      socket = new WebSocket(url);
      socket.addEventListener("open", () => {
        attempt = 0;
        probe.connections += 1;
        report("live", "open");
        if (onOpen) onOpen();
      });
      socket.addEventListener("message", (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        onMessage(message);
      });
      socket.addEventListener("close", (event) => {
        socket = null;
        if (stopped) return;
        probe.drops += 1;
        const reason = final ? final(event.code) : null;
        if (reason) {
          report(reason, "done");
          return;
        }
        schedule();
      });
    }
    const online = () => {
      if (timer !== null) {
        clearTimeout(timer);
        open();
      }
    };
    window.addEventListener("online", online);
    open();
    return () => {
      stopped = true;
      window.removeEventListener("online", online);
      if (timer !== null) clearTimeout(timer);
      if (socket) socket.close(1000);
      if (onState) onState("off");
    };
  }

  async function watchToken(body) {
    return (await api("POST", "/tokens/watch", body)).token;
  }

  // -- routing -----------------------------------------------------------------------------

  function route() {
    runCleanup();
    if (!state.me) return;
    const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    const [section, ...rest] = hash.split("/");
    const id = rest.join("/");
    let current = "tasks";
    if (section === "tasks" && id) showTask(id);
    else if (section === "webhooks" && id) (current = "webhooks"), showDeliveries(id);
    else if (section === "webhooks") (current = "webhooks"), showWebhooks();
    else if (section === "keys") (current = "keys"), showKeys();
    else showTasks();
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.section === current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function view(title, ...children) {
    const heading = h("h1", { tabindex: "-1" }, title);
    $("view").replaceChildren(heading, ...children);
    return heading;
  }

  function errorBox() {
    return h("p", { class: "error", role: "alert", hidden: true });
  }

  function showError(box, error) {
    box.textContent = String(error);
    box.hidden = false;
  }

  function field(label, control) {
    const id = control.id || `f-${Math.random().toString(36).slice(2)}`;
    control.id = id;
    return h("div", { class: "field" }, h("label", { for: id }, label), control);
  }

  function select(options, value) {
    const el = h("select", {});
    for (const [optionValue, label] of options) {
      const option = h("option", { value: optionValue }, label);
      if (optionValue === value) option.selected = true;
      el.append(option);
    }
    return el;
  }

  /** A button that asks again before ``action`` (no modal dialog: an inline choice). */
  function confirmButton(label, question, action, box) {
    const holder = h("span", { class: "actions" });
    const ask = h("button", { type: "button", class: "danger" }, label);
    ask.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: "danger" }, `Yes, ${label.toLowerCase()}`);
      const no = h("button", { type: "button", class: "quiet" }, "Keep");
      const words = h("span", {}, question);
      no.addEventListener("click", () => {
        holder.replaceChildren(ask);
        ask.focus();
      });
      yes.addEventListener("click", async () => {
        yes.disabled = true;
        try {
          await action();
        } catch (error) {
          if (box) showError(box, error);
          holder.replaceChildren(ask);
        }
      });
      holder.replaceChildren(words, yes, no);
      no.focus();
    });
    holder.append(ask);
    return holder;
  }

  function secretBox(title, secret) {
    const input = h("input", { type: "text", readonly: true, spellcheck: "false",
      "aria-label": title, class: "mono" });
    input.value = secret;
    input.addEventListener("focus", () => input.select());
    return h("div", { class: "secret", role: "status" },
      h("strong", {}, `${title} (shown once; copy it now)`), input);
  }

  // -- the task list -----------------------------------------------------------------------

  const filters = { status: "", q: "", owner: "", tags: [], page: 1 };

  function matches(task) {
    if (!task) return false;
    if (filters.status && task.status !== filters.status) return false;
    if (filters.q && !String(task.taskId).startsWith(filters.q)) return false;
    if (filters.owner && task.owner !== filters.owner) return false;
    const tags = Array.isArray(task.tags) ? task.tags : [];
    if (filters.tags.some((tag) => !tags.includes(tag))) return false;
    return true;
  }

  function showTasks() {
    const admin = isAdmin();
    const status = select([["", "Any status"], ...STATUSES.map((s) => [s, s])], filters.status);
    status.id = "filter-status";
    const prefix = h("input", { id: "filter-q", type: "search", spellcheck: "false",
      placeholder: "e.g. export-", autocomplete: "off" });
    prefix.value = filters.q;
    const owner = h("input", { id: "filter-owner", type: "search", spellcheck: "false",
      autocomplete: "off" });
    owner.value = filters.owner;
    const tag = h("input", { id: "filter-tag", type: "search", spellcheck: "false",
      placeholder: "e.g. billing eu", autocomplete: "off" });
    tag.value = filters.tags.join(" ");
    const form = h("form", { class: "filters", role: "search", "aria-label": "Filter tasks" },
      field("Status", status), field("Task id prefix", prefix), field("Tags", tag),
      admin && field("Owner", owner));
    form.addEventListener("submit", (event) => event.preventDefault());
    const summary = h("p", { class: "muted", id: "tasks-summary", "aria-live": "polite" }, "Loading…");
    const box = errorBox();
    const columns = ["Task", "Status", "Progress", ...(admin ? ["Owner"] : []), "Updated"];
    const body = h("tbody", {});
    const table = h("table", { class: "cards", id: "tasks" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), body);
    const previous = h("button", { type: "button", class: "quiet" }, "Previous page");
    const next = h("button", { type: "button", class: "quiet" }, "Next page");
    const where = h("span", { class: "muted" });
    const pager = h("nav", { class: "pager", "aria-label": "Pages" }, previous, where, next);
    view("Tasks", form, summary, box, h("div", { class: "table" }, table), pager);

    const rows = new Map();
    let shown = { tasks: [], total: 0, pages: 1 };
    let loading = null, again = false, lastFetch = 0, refetchTimer = null;

    function row(task) {
      const tr = h("tr", { dataset: { taskId: task.taskId } },
        h("td", { class: "id", "data-label": "Task" },
          h("a", { href: `#/tasks/${encodeURIComponent(task.taskId)}` }, task.taskId)),
        h("td", { "data-label": "Status", class: "status" }, badge(task.status)),
        h("td", { "data-label": "Progress", class: "prog" },
          progressCell(task.progress, `Progress of ${task.taskId}`)),
        admin && h("td", { "data-label": "Owner", class: "owner" }, text(task.owner)),
        h("td", { "data-label": "Updated", class: "updated" }, when(task.updatedAt)));
      tr.task = task;
      return tr;
    }

    function update(tr, task) {
      tr.task = task;
      tr.querySelector(".status").replaceChildren(badge(task.status));
      setProgress(tr.querySelector(".prog"), task.progress);
      tr.querySelector(".updated").textContent = when(task.updatedAt);
    }

    function renderCounts() {
      const { total, pages } = shown;
      summary.textContent = total === 1 ? "1 task" : `${total} tasks`;
      where.textContent = `Page ${filters.page} of ${Math.max(pages, 1)}`;
      previous.disabled = filters.page <= 1;
      next.disabled = filters.page >= pages;
    }

    // What events said lately: listings may lag progress (0.2 s), so a page fetched
    // meanwhile must not undo what the events already showed.
    const recent = new Map();
    function remember(id, task) {
      recent.set(id, { task, at: Date.now() });
      if (recent.size > 2000) recent.delete(recent.keys().next().value);
    }
    function render(answer) {
      const pagination = answer.pagination || {};
      shown = {
        total: Number(pagination.total) || 0,
        pages: Number(pagination.pages) || 0,
      };
      rows.clear();
      body.replaceChildren();
      const cutoff = Date.now() - 5000;
      for (let task of answer.tasks || []) {
        const seen = recent.get(task.taskId);
        if (seen && seen.at > cutoff) {
          if (seen.task === null) continue;
          if (Number(seen.task.seq) > Number(task.seq)) task = seen.task;
        }
        const tr = row(task);
        rows.set(task.taskId, tr);
        body.append(tr);
      }
      if (!rows.size) {
        body.append(h("tr", { class: "empty" }, h("td", { colspan: String(columns.length) },
          "No tasks match.")));
      }
      renderCounts();
    }

    async function load() {
      if (loading) {
        again = true;
        return loading;
      }
      lastFetch = Date.now();
      const params = { page: filters.page, limit: PAGE_SIZE, status: filters.status,
        q: filters.q, owner: admin ? filters.owner : "", tag: filters.tags };
      loading = api("GET", `/tasks${query(params)}`)
        .then((answer) => {
          box.hidden = true;
          render(answer);
          if (filters.page > 1 && filters.page > (answer.pagination || {}).pages) {
            filters.page = Math.max(1, (answer.pagination || {}).pages || 1);
            again = true;
          }
        })
        .catch((error) => showError(box, error))
        .finally(() => {
          loading = null;
          if (again) {
            again = false;
            load();
          }
        });
      return loading;
    }

    /** At most one refetch a second, however many events ask for one. */
    function refetchSoon() {
      if (refetchTimer !== null) return;
      const wait = Math.max(0, 1000 - (Date.now() - lastFetch));
      refetchTimer = setTimeout(() => {
        refetchTimer = null;
        load();
      }, wait);
    }

    function apply(message) {
      const id = message.taskId;
      if (typeof id !== "string") return;
      if (filters.owner && message.owner && message.owner !== filters.owner) return;
      if (loading) refetchSoon(); // the page on its way may predate this event
      if (message.type === "deleted") remember(id, null);
      else if (message.task) remember(id, message.task);
      const tr = rows.get(id);
      if (message.type === "deleted") {
        if (tr) {
          tr.remove();
          rows.delete(id);
          shown.total = Math.max(0, shown.total - 1);
          renderCounts();
          refetchSoon();
        }
        return;
      }
      const task = message.task;
      if (!task || typeof task !== "object") return;
      if (tr) {
        if (Number(task.seq) < Number(tr.task.seq)) return;
        if (matches(task)) update(tr, task);
        else {
          tr.remove();
          rows.delete(id);
          refetchSoon();
        }
      } else if (message.type === "created" && matches(task) && filters.page === 1) {
        const empty = body.querySelector("tr.empty");
        if (empty) empty.remove();
        const fresh = row(task);
        rows.set(id, fresh);
        body.prepend(fresh);
        while (rows.size > PAGE_SIZE) {
          const last = body.lastElementChild;
          rows.delete(last.dataset.taskId);
          last.remove();
        }
        shown.total += 1;
        shown.pages = Math.ceil(shown.total / PAGE_SIZE);
        renderCounts();
      } else if (message.type === "created" && matches(task)) {
        shown.total += 1;
        refetchSoon();
      } else if (matches(task) && message.type !== "progress" && message.type !== "event") {
        refetchSoon(); // a task whose new status now matches the filter
      }
    }

    let debounce = null;
    const changed = () => {
      filters.status = status.value;
      filters.q = prefix.value.trim();
      filters.owner = admin ? owner.value.trim() : "";
      filters.tags = [...new Set(tag.value.split(/[\s,]+/).filter(Boolean))];
      filters.page = 1;
      load();
    };
    status.addEventListener("change", changed);
    for (const input of [prefix, tag, owner]) {
      input.addEventListener("input", () => {
        clearTimeout(debounce);
        debounce = setTimeout(changed, 250);
      });
    }
    previous.addEventListener("click", () => {
      filters.page = Math.max(1, filters.page - 1);
      load();
    });
    next.addEventListener("click", () => {
      filters.page += 1;
      load();
    });

    const setState = (phase) => (probe.live = phase);
    let stop;
    if (admin) {
      stop = reconnecting({
        label: "Live (all owners)",
        onState: setState,
        connect: async () => wsUrl(`/admin/feed${query({ token: await watchToken({ feed: "admin" }) })}`),
        onOpen: load,
        onMessage: apply,
        final: (code) => (code === 4403 ? "stopped: the feed is for admin keys" : null),
      });
    } else {
      const room = `user_${state.me.owner}`;
      let since = null;
      stop = reconnecting({
        label: "Live",
        onState: setState,
        connect: async () => {
          if (since === null) {
            // Attach from the room's latest message: nothing after it can be missed.
            const health = await api("GET", `/rooms/${encodeURIComponent(room)}/health`);
            since = Number(health.lastSeq) || 0;
          }
          const token = await watchToken({ room });
          return wsUrl(`/rooms/${encodeURIComponent(room)}/subscribe${query({ since, token })}`);
        },
        onOpen: load,
        onMessage: (message) => {
          if (Number.isFinite(message.roomSeq)) since = Math.max(since || 0, message.roomSeq);
          apply(message);
        },
        final: (code) => (code === 4404 ? "stopped: no such room" : null),
      });
    }
    onCleanup(() => {
      stop();
      clearTimeout(refetchTimer);
      clearTimeout(debounce);
    });
    load();
  }

  // -- one task ----------------------------------------------------------------------------

  const EVENT_WORDS = {
    created: "Created", log: "Log", progress: "Progress", success: "Completed",
    error: "Failed", canceled: "Canceled", timeout: "Timed out",
  };

  function showTask(taskId) {
    const box = errorBox();
    const notice = h("p", { class: "notice", role: "status", hidden: true });
    const head = h("div", { class: "card big" });
    const actions = h("div", { class: "actions", id: "task-actions" });
    const facts = h("dl", { class: "facts" });
    const details = h("div", {});
    const family = h("div", { id: "children" });
    const timeline = h("ol", { class: "timeline", id: "timeline", "aria-label": "History" });
    const older = h("button", { type: "button", class: "quiet", hidden: true }, "Load older events");
    const back = h("a", { href: "#/" }, "← All tasks");
    view(taskId, h("p", {}, back), box, notice, head, actions, facts, details, family,
      h("h2", {}, "History"), older, timeline);

    let task = null, oldest = null, newest = 0, gone = false;
    probe.taskSeqs = [];

    function renderTask() {
      head.replaceChildren(
        h("div", { class: "actions" }, badge(task.status),
          h("span", { class: "muted" }, `seq ${text(task.seq)}`)),
        progressCell(task.progress, "Task progress"));
      const rows = [
        ["Owner", task.owner], ["Created", when(task.createdAt)],
        ["Started", when(task.startedAt)], ["Updated", when(task.updatedAt)],
      ];
      if (task.completedAt) rows.push(["Completed", when(task.completedAt)]);
      if (task.failedAt) rows.push(["Failed", when(task.failedAt)]);
      if (task.canceledAt) rows.push(["Canceled", when(task.canceledAt)]);
      if (task.timeoutSeconds) rows.push(["Heartbeat timeout", duration(task.timeoutSeconds)]);
      if (task.ttlSeconds) rows.push(["Deleted after", duration(task.ttlSeconds)]);
      if (Array.isArray(task.tags) && task.tags.length) rows.push(["Tags", task.tags.join(", ")]);
      if (task.externalId) rows.push(["External id", task.externalId]);
      if (task.parentId) {
        rows.push(["Parent", h("a", { href: `#/tasks/${encodeURIComponent(task.parentId)}`,
          id: "parent-link" }, task.parentId)]);
        rows.push(["Weight", text(task.weight)]);
      }
      if (task.childCount) {
        const policy = task.onChildFailure === "ignore" ? "ignored" : "fails this task";
        rows.push(["Children", `${task.childCount} (a failed child ${policy}` +
          `${task.completeWithChildren ? "; completes with them" : ""})`]);
      }
      facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k),
        h("dd", {}, v instanceof Node ? v : text(v))]));
      const parts = [];
      if (task.error) parts.push(h("h2", {}, "Error"), h("p", { class: "error", id: "task-error" },
        text(task.error)));
      const meta = task.metadata && typeof task.metadata === "object" ? task.metadata : {};
      parts.push(h("h2", {}, "Metadata"),
        h("pre", { id: "metadata", tabindex: "0" }, JSON.stringify(meta, null, 2)));
      details.replaceChildren(...parts);
      renderActions();
      childrenSoon();
    }

    // Children: the first page, refetched at most once a second while the task changes
    // (its progress moves whenever one of them reports).
    let childrenTimer = null, childrenAt = 0, childrenShown = -1;
    function childrenSoon() {
      if (!task || (!task.childCount && childrenShown <= 0)) {
        family.replaceChildren();
        childrenShown = 0;
        return;
      }
      if (childrenTimer !== null) return;
      const wait = Math.max(0, 1000 - (Date.now() - childrenAt));
      childrenTimer = setTimeout(() => {
        childrenTimer = null;
        childrenAt = Date.now();
        loadChildren().catch((error) => showError(box, error));
      }, wait);
    }
    onCleanup(() => clearTimeout(childrenTimer));

    async function loadChildren() {
      const answer = await api("GET",
        `/tasks/${encodeURIComponent(taskId)}/children${query({ limit: 100 })}`);
      const kids = answer.tasks || [];
      childrenShown = kids.length;
      const total = (answer.pagination || {}).total || kids.length;
      const rows = kids.map((kid) => h("tr", { dataset: { taskId: kid.taskId } },
        h("td", { class: "id", "data-label": "Task" },
          h("a", { href: `#/tasks/${encodeURIComponent(kid.taskId)}` }, kid.taskId)),
        h("td", { "data-label": "Status", class: "status" }, badge(kid.status)),
        h("td", { "data-label": "Progress", class: "prog" },
          progressCell(kid.progress, `Progress of ${kid.taskId}`)),
        h("td", { "data-label": "Weight" }, text(kid.weight))));
      family.replaceChildren(
        h("h2", {}, total > kids.length ? `Children (first ${kids.length} of ${total})` : "Children"),
        h("div", { class: "table" }, h("table", { class: "cards", id: "children-table" },
          h("thead", {}, h("tr", {}, ["Task", "Status", "Progress", "Weight"].map((c) =>
            h("th", { scope: "col" }, c)))),
          h("tbody", {}, rows))));
    }

    function renderActions() {
      actions.replaceChildren();
      if (!canWrite() || gone) return;
      const mutate = (path, body, done) => async () => {
        box.hidden = true;
        const answer = await api("POST", path, { taskId, ...body });
        if (answer && answer.task) {
          task = answer.task;
          renderTask();
        }
        notice.textContent = done;
        notice.hidden = false;
      };
      const guarded = (fn) => async () => {
        try {
          await fn();
        } catch (error) {
          showError(box, error);
        }
      };
      if (!TERMINAL.has(task.status)) {
        actions.append(h("button", { type: "button", onclick: guarded(mutate("/tasks/complete", {},
          "Task completed.")) }, "Complete"));
        const failButton = h("button", { type: "button", class: "danger" }, "Fail…");
        failButton.addEventListener("click", () => {
          const reason = h("input", { type: "text", id: "fail-error", required: true,
            autocomplete: "off" });
          const form = h("form", { class: "inline card", id: "fail-form" },
            field("Error text", reason),
            h("button", { type: "submit", class: "danger" }, "Fail task"),
            h("button", { type: "button", class: "quiet", onclick: renderActions }, "Keep"));
          form.addEventListener("submit", (event) => {
            event.preventDefault();
            if (!reason.value.trim()) return;
            guarded(mutate("/tasks/fail", { error: reason.value.trim() }, "Task failed."))();
          });
          actions.replaceChildren(form);
          reason.focus();
        });
        actions.append(failButton);
        actions.append(h("button", { type: "button", class: "quiet",
          onclick: guarded(mutate("/tasks/cancel", {}, "Task canceled.")) }, "Cancel task"));
      }
      const what = task.childCount ? "its history and its subtree" : "its history";
      actions.append(confirmButton("Delete", `Delete ${taskId}, ${what}?`, async () => {
        await api("DELETE", `/tasks/${encodeURIComponent(taskId)}`);
        gone = true;
        location.hash = "#/";
      }, box));
    }

    function eventItem(event) {
      const words = EVENT_WORDS[event.eventType] || text(event.eventType);
      const bits = [];
      if (Number.isFinite(event.progress)) bits.push(percent(event.progress));
      if (event.message) bits.push(text(event.message));
      const meta = event.metadata && typeof event.metadata === "object" &&
        Object.keys(event.metadata).length ? JSON.stringify(event.metadata) : null;
      return h("li", { dataset: { seq: String(event.seq) } },
        h("div", { class: "when" }, `#${text(event.seq)} · ${when(event.timestamp)}`),
        h("div", { class: "what" }, h("strong", {}, words), bits.length ? ` — ${bits.join(" · ")}` : ""),
        meta && h("div", { class: "muted mono" }, meta));
    }

    function addEvents(events, atStart) {
      const items = [];
      const first = oldest, last = newest;
      for (const event of events) {
        if (!event || !Number.isFinite(event.seq)) continue;
        if (atStart ? first !== null && event.seq >= first : event.seq <= last) continue;
        items.push(eventItem(event));
        oldest = oldest === null ? event.seq : Math.min(oldest, event.seq);
        newest = Math.max(newest, event.seq);
      }
      if (atStart) timeline.prepend(...items);
      else timeline.append(...items);
      older.hidden = !(oldest !== null && oldest > 1);
    }

    async function loadHistory(after, limit, atStart) {
      const answer = await api("GET", `/tasks/${encodeURIComponent(taskId)}/history` +
        query({ after, limit }));
      addEvents(answer.events || [], atStart);
      return answer;
    }

    older.addEventListener("click", async () => {
      if (oldest === null || oldest <= 1) return;
      const after = Math.max(0, oldest - 1 - HISTORY_PAGE);
      try {
        const answer = await loadHistory(after, oldest - 1 - after, true);
        if (!(answer.events || []).length) older.hidden = true;
      } catch (error) {
        showError(box, error);
      }
    });

    async function reloadHistory() {
      timeline.replaceChildren();
      oldest = null;
      newest = 0;
      const after = Math.max(0, Number(task.seq) - HISTORY_PAGE);
      let answer = await loadHistory(after, HISTORY_PAGE, false);
      while (answer.nextAfter !== null && answer.nextAfter !== undefined) {
        answer = await loadHistory(answer.nextAfter, HISTORY_PAGE, false);
      }
    }

    let since = null, epoch = null;
    function onMessage(message) {
      if (message.type === "pong" || message.type === "error") return;
      if (message.type === "deleted") {
        gone = true;
        notice.textContent = "This task was deleted.";
        notice.hidden = false;
        renderActions();
        return;
      }
      if (Number.isFinite(message.seq)) probe.taskSeqs.push(message.seq);
      if (message.type === "snapshot") {
        const fresh = message.task;
        const restarted = !message.recovered && task && fresh && fresh.epoch !== task.epoch;
        task = fresh || task;
        epoch = message.epoch || (task && task.epoch);
        since = Math.max(since || 0, Number(message.seq) || 0);
        renderTask();
        if (restarted || (!message.recovered && task && Number(task.seq) > newest)) {
          reloadHistory().catch((error) => showError(box, error));
        }
        return;
      }
      if (message.task) {
        task = message.task;
        renderTask();
      }
      if (message.event) addEvents([{ ...message.event, seq: message.event.seq || message.seq }]);
      if (Number.isFinite(message.seq)) since = Math.max(since || 0, message.seq);
    }

    (async () => {
      try {
        task = await api("GET", `/tasks/${encodeURIComponent(taskId)}`);
        epoch = task.epoch;
        renderTask();
        await reloadHistory();
      } catch (error) {
        showError(box, error);
        return;
      }
      const stop = reconnecting({
        label: "Live (this task)",
        onState: (phase) => (probe.taskSocket = phase),
        connect: async () => {
          const token = await watchToken({ taskId });
          const resume = since === null ? {} : { since, epoch };
          return wsUrl(`/ws/task/${encodeURIComponent(taskId)}${query({ ...resume, token })}`);
        },
        onMessage,
        final: (code) => {
          if (code === 1000) return "ended: the task was deleted";
          if (code === 4404) return "stopped: no such task";
          return null;
        },
      });
      onCleanup(stop);
    })();
  }

  // -- webhooks ----------------------------------------------------------------------------

  function showWebhooks() {
    const box = errorBox();
    const created = h("div", {});
    const body = h("tbody", {});
    const admin = isAdmin();
    const columns = ["URL", "Event type", "Task id prefix", ...(admin ? ["Owner"] : []), "Active",
      "Deliveries", ""];
    const table = h("table", { class: "cards", id: "webhooks" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), body);
    const parts = [box, created];
    if (canWrite()) {
      const url = h("input", { type: "url", id: "wh-url", required: true, placeholder: "https://",
        spellcheck: "false" });
      const eventType = select(EVENT_TYPES.map((t) => [t, t]), "all");
      eventType.id = "wh-event";
      const prefix = h("input", { type: "text", id: "wh-prefix", spellcheck: "false" });
      const form = h("form", { class: "inline card", "aria-label": "New webhook" },
        field("URL", url), field("Event type", eventType), field("Task id prefix", prefix),
        h("button", { type: "submit" }, "Create webhook"));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        box.hidden = true;
        const request = { url: url.value.trim(), eventType: eventType.value };
        if (prefix.value.trim()) request.taskIdPrefix = prefix.value.trim();
        try {
          const hook = await api("POST", "/webhooks", request);
          created.replaceChildren(secretBox(`Signing secret of ${hook.id}`, text(hook.secret)));
          form.reset();
          load();
        } catch (error) {
          showError(box, error);
        }
      });
      parts.push(h("h2", {}, "New webhook"), form);
    }
    view("Webhooks", ...parts, h("h2", {}, "Webhooks"), h("div", { class: "table" }, table));

    async function load() {
      try {
        const answer = await api("GET", "/webhooks");
        body.replaceChildren();
        for (const hook of answer.webhooks || []) {
          body.append(h("tr", { dataset: { webhookId: hook.id } },
            h("td", { "data-label": "URL", class: "mono" }, text(hook.url)),
            h("td", { "data-label": "Event type" }, text(hook.eventType)),
            h("td", { "data-label": "Task id prefix" }, text(hook.taskIdPrefix)),
            admin && h("td", { "data-label": "Owner" }, text(hook.owner)),
            h("td", { "data-label": "Active" }, hook.active ? "yes" : "no"),
            h("td", { "data-label": "Deliveries" },
              h("a", { href: `#/webhooks/${encodeURIComponent(hook.id)}` }, "Deliveries")),
            h("td", { "data-label": "" }, confirmButton("Delete", `Delete ${hook.id}?`, async () => {
              await api("DELETE", `/webhooks/${encodeURIComponent(hook.id)}`);
              load();
            }, box))));
        }
        if (!body.children.length) {
          body.append(h("tr", {}, h("td", { colspan: String(columns.length) }, "No webhooks yet.")));
        }
      } catch (error) {
        showError(box, error);
      }
    }
    load();
  }

  function showDeliveries(webhookId) {
    const box = errorBox();
    const about = h("p", { class: "muted" });
    const list = h("div", { id: "deliveries" });
    const refresh = h("button", { type: "button", class: "quiet" }, "Refresh");
    view(`Deliveries of ${webhookId}`, h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")),
      about, box, h("div", { class: "actions" }, refresh), list);
    let timer = null;

    function attempts(delivery) {
      const items = (delivery.attempts || []).map((a) => h("li", {},
        `Attempt ${text(a.attempt)} at ${when(a.at)}: ` +
        `${a.responseCode ? `HTTP ${a.responseCode}` : text(a.error, "no answer")}` +
        (a.responseCode && a.error ? ` (${text(a.error)})` : "") +
        (Number.isFinite(a.durationMs) ? `, ${Math.round(a.durationMs)} ms` : "")));
      return items.length ? h("ol", { class: "attempts" }, items) : h("span", { class: "muted" },
        "not tried yet");
    }

    async function load() {
      clearTimeout(timer);
      timer = null;
      try {
        const [hook, answer] = await Promise.all([
          api("GET", `/webhooks/${encodeURIComponent(webhookId)}`),
          api("GET", `/webhooks/${encodeURIComponent(webhookId)}/deliveries?limit=50`),
        ]);
        about.textContent = `${text(hook.url)} · ${text(hook.eventType)} events` +
          (hook.taskIdPrefix ? ` · tasks ${hook.taskIdPrefix}…` : "");
        const deliveries = answer.deliveries || [];
        const body = h("tbody", {});
        for (const d of deliveries) {
          const redeliver = h("button", { type: "button", class: "quiet" }, "Redeliver");
          redeliver.setAttribute("aria-label", `Redeliver ${d.id}`);
          redeliver.addEventListener("click", async () => {
            redeliver.disabled = true;
            try {
              await api("POST", `/webhooks/${encodeURIComponent(webhookId)}/deliveries/` +
                `${encodeURIComponent(d.id)}/redeliver`);
              load();
            } catch (error) {
              showError(box, error);
              redeliver.disabled = false;
            }
          });
          body.append(h("tr", { dataset: { deliveryId: d.id, status: text(d.status) } },
            h("td", { "data-label": "Event" }, `${text(d.eventType)} of `,
              h("a", { href: `#/tasks/${encodeURIComponent(d.taskId)}` }, text(d.taskId)),
              ` #${text(d.seq)}`),
            h("td", { "data-label": "Status" }, badge(d.status)),
            h("td", { "data-label": "Attempts" }, attempts(d)),
            h("td", { "data-label": "Next try" }, d.status === "pending" ? when(d.nextRetryAt) : "—"),
            h("td", { "data-label": "Created" }, when(d.createdAt)),
            h("td", { "data-label": "" }, redeliver)));
        }
        if (!deliveries.length) {
          list.replaceChildren(h("p", { class: "muted" }, "No deliveries yet."));
        } else {
          list.replaceChildren(h("table", { class: "cards" }, h("thead", {}, h("tr", {},
            ["Event", "Status", "Attempts", "Next try", "Created", ""].map((c) =>
              h("th", { scope: "col" }, c)))), body));
        }
        // While something is on its way, follow it.
        if (deliveries.some((d) => d.status === "pending")) timer = setTimeout(load, 1000);
      } catch (error) {
        showError(box, error);
      }
    }
    refresh.addEventListener("click", load);
    onCleanup(() => clearTimeout(timer));
    load();
  }

  // -- keys --------------------------------------------------------------------------------

  function showKeys() {
    if (!isAdmin()) {
      view("Keys", h("p", {}, "Keys are managed by admin keys."));
      return;
    }
    const box = errorBox();
    const created = h("div", {});
    const owner = h("input", { type: "text", id: "key-owner", required: true, spellcheck: "false",
      autocomplete: "off" });
    const role = select(ROLES.map((r) => [r, r]), "reader");
    role.id = "key-role";
    const name = h("input", { type: "text", id: "key-name", autocomplete: "off" });
    const form = h("form", { class: "inline card", "aria-label": "New key" },
      field("Owner", owner), field("Role", role), field("Name", name),
      h("button", { type: "submit" }, "Create key"));
    const body = h("tbody", {});
    const table = h("table", { class: "cards", id: "keys" }, h("thead", {}, h("tr", {},
      ["Id", "Owner", "Role", "Name", "Created", "Last used", "State", ""].map((c) =>
        h("th", { scope: "col" }, c)))), body);
    view("Keys", box, h("h2", {}, "New key"), form, created, h("h2", {}, "Keys"),
      h("div", { class: "table" }, table));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      box.hidden = true;
      const request = { owner: owner.value.trim(), role: role.value };
      if (name.value.trim()) request.name = name.value.trim();
      try {
        const key = await api("POST", "/admin/keys", request);
        created.replaceChildren(secretBox(`Secret of key ${key.id}`, text(key.key)));
        form.reset();
        load();
      } catch (error) {
        showError(box, error);
      }
    });

    async function load() {
      try {
        const answer = await api("GET", "/admin/keys");
        body.replaceChildren();
        for (const key of answer.keys || []) {
          const mine = state.me && state.me.keyId === key.id;
          body.append(h("tr", { dataset: { keyId: key.id } },
            h("td", { "data-label": "Id", class: "mono" }, text(key.id)),
            h("td", { "data-label": "Owner" }, text(key.owner)),
            h("td", { "data-label": "Role" }, text(key.role)),
            h("td", { "data-label": "Name" }, text(key.name)),
            h("td", { "data-label": "Created" }, when(key.createdAt)),
            h("td", { "data-label": "Last used" }, when(key.lastUsedAt)),
            h("td", { "data-label": "State" }, key.revokedAt ? badge("revoked") : "active"),
            h("td", { "data-label": "" }, key.revokedAt || mine ? "" :
              confirmButton("Revoke", `Revoke ${key.id}?`, async () => {
                await api("DELETE", `/admin/keys/${encodeURIComponent(key.id)}`);
                load();
              }, box))));
        }
        if (!body.children.length) {
          body.append(h("tr", {}, h("td", { colspan: "8" }, "No keys but the bootstrap key.")));
        }
      } catch (error) {
        showError(box, error);
      }
    }
    load();
  }

  // -- start -------------------------------------------------------------------------------

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    const error = $("signin-error");
    error.hidden = true;
    if (!key) return;
    const button = event.target.querySelector("button");
    button.disabled = true;
    try {
      await signIn(key);
      $("api-key").value = "";
    } catch (failure) {
      error.textContent = `Sign-in failed: ${failure}`;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  $("signout").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", () => {
    route();
    const heading = document.querySelector("#view h1");
    if (heading) heading.focus();
  });

  refreshHealth();
  setInterval(refreshHealth, 10000);
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) {
    whoAmI(saved)
      .then((me) => {
        state.key = saved;
        state.me = me;
        showSignedIn();
      })
      .catch((error) => signOut(error.status === 401 ? `Signed out: ${error}` : String(error)));
  } else {
    signOut("");
  }
})();
