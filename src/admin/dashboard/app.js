// The fulfilld dashboard: reads the admin API with the token given at sign-in (kept in
// this tab's sessionStorage), refreshes every 2 s, and acts through the same API. Every
// value from the server is put in the page as text, never as HTML.
"use strict";

const KEY = "fulfilld-admin-token";
const $ = (sel) => document.querySelector(sel);

function token() {
  return sessionStorage.getItem(KEY) || "";
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: {
      "Authorization": "Bearer " + token(),
      "Content-Type": "application/json",
      "X-Fulfilld-Actor": "dashboard",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error((answer.error && answer.error.message) || ("HTTP " + r.status));
    err.status = r.status;
    throw err;
  }
  return answer;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–";
}

function age(secs) {
  if (!secs) return "–";
  if (secs < 120) return secs + " s";
  if (secs < 7200) return Math.round(secs / 60) + " min";
  return Math.round(secs / 3600) + " h";
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function say(sel, text, bad) {
  const el = $(sel);
  el.textContent = text;
  el.classList.toggle("bad", !!bad);
}

async function showQueues() {
  const { queues } = await api("GET", "/api/admin/queues");
  const body = $("#queues tbody");
  body.replaceChildren();
  for (const q of queues) {
    const tr = document.createElement("tr");
    tr.dataset.kind = q.kind;
    cell(tr, q.kind);
    for (const k of ["waiting", "pending", "retrying", "running", "dead", "done_last_hour"]) {
      const td = cell(tr, q[k], "num " + k);
      if (q[k] === 0) td.dataset.zero = "";
    }
    cell(tr, age(q.oldest_due_age_s), "num oldest");
    body.appendChild(tr);
  }
}

async function showActivity() {
  const { minutes } = await api("GET", "/api/admin/activity?minutes=60");
  const svg = $("#chart svg");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const top = Math.max(1, ...minutes.map((m) => m.steps_done + m.steps_failed));
  const w = 600 / minutes.length;
  minutes.forEach((m, i) => {
    let y = 120;
    for (const [n, color] of [[m.steps_done, "#1a7f37"], [m.steps_failed, "#cf222e"]]) {
      if (!n) continue;
      const h = (n / top) * 116;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", String(i * w + 0.5));
      r.setAttribute("width", String(Math.max(1, w - 1)));
      r.setAttribute("y", String(y - h));
      r.setAttribute("height", String(h));
      r.setAttribute("fill", color);
      const t = document.createElementNS(ns, "title");
      t.textContent = when(m.at) + ": " + m.steps_done + " done, " + m.steps_failed + " failed, " + m.webhooks + " webhooks";
      r.appendChild(t);
      svg.appendChild(r);
      y -= h;
    }
  });
  const sum = (k) => minutes.reduce((a, m) => a + m[k], 0);
  $("#done-total").textContent = sum("steps_done");
  $("#failed-total").textContent = sum("steps_failed");
  $("#webhooks-total").textContent = sum("webhooks");
}

async function showDead() {
  const { dead } = await api("GET", "/api/admin/dead-letters?limit=100");
  const body = $("#dead tbody");
  body.replaceChildren();
  for (const d of dead) {
    const tr = document.createElement("tr");
    tr.dataset.step = d.id;
    cell(tr, d.id);
    const order = cell(tr, d.order_id);
    order.appendChild(document.createTextNode(" "));
    order.appendChild(button("timeline", () => showOrder(d.order_id)));
    cell(tr, d.kind);
    cell(tr, d.attempts, "num");
    cell(tr, when(d.dead_at));
    cell(tr, d.last_error, "err");
    const actions = cell(tr, "");
    actions.appendChild(button("Retry", () => act(d.id, "retry")));
    actions.appendChild(button("Discard", () => act(d.id, "discard")));
    body.appendChild(tr);
  }
  if (!dead.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, "No dead steps.");
    td.colSpan = 7;
    body.appendChild(tr);
  }
}

async function act(stepId, action) {
  const reason = $("#dead-reason").value.trim();
  try {
    await api("POST", "/api/admin/steps/" + stepId + "/" + action, reason ? { reason } : {});
    say("#dead-msg", (action === "retry" ? "Retried" : "Discarded") + " step " + stepId + ".");
    await refresh();
  } catch (e) {
    say("#dead-msg", "Step " + stepId + ": " + e.message, true);
  }
}

// The latest webhook events, or only the parked ones (which a replay tries again, after a
// fix or a configuration change).
async function showEvents() {
  const parked = $("#events-parked").checked ? "&parked=true" : "";
  const { events } = await api("GET", "/api/admin/events?limit=25" + parked);
  const body = $("#events tbody");
  body.replaceChildren();
  for (const ev of events) {
    const tr = document.createElement("tr");
    tr.dataset.event = ev.id;
    cell(tr, ev.id);
    cell(tr, ev.provider);
    cell(tr, ev.event_type);
    cell(tr, when(ev.received_at));
    cell(tr, ev.outcome);
    cell(tr, "").appendChild(button("Replay", () => replay(ev.id)));
    body.appendChild(tr);
  }
}

// The audit log's latest entries: the token that acted, and the person it said acts.
async function showAudit() {
  const q = new URLSearchParams({ limit: "25" });
  const actor = $("#audit-actor").value.trim();
  const action = $("#audit-action").value.trim();
  if (actor) q.set("actor", actor);
  if (action) q.set("action", action);
  const { entries } = await api("GET", "/api/admin/audit?" + q);
  const body = $("#audit tbody");
  body.replaceChildren();
  for (const a of entries) {
    const tr = document.createElement("tr");
    cell(tr, a.id);
    cell(tr, when(a.at));
    cell(tr, a.actor);
    cell(tr, a.said_by || "");
    cell(tr, a.action);
    cell(tr, a.target);
    cell(tr, a.reason || "");
    body.appendChild(tr);
  }
}

// Endpoints, and the latest deliveries to them (a dead one with Retry).
async function showMerchant() {
  const [{ endpoints }, { deliveries }] = await Promise.all([
    api("GET", "/api/admin/webhook-endpoints"),
    api("GET", "/api/admin/webhook-deliveries?limit=25"),
  ]);
  const eps = $("#endpoints tbody");
  eps.replaceChildren();
  for (const ep of endpoints) {
    const tr = document.createElement("tr");
    tr.dataset.endpoint = ep.id;
    cell(tr, ep.id);
    cell(tr, ep.url);
    cell(tr, ep.event_types.join(", "));
    cell(tr, ep.enabled ? "yes" : "no");
    cell(tr, ep.disabled_reason, "err");
    eps.appendChild(tr);
  }
  if (!endpoints.length) {
    const td = cell(document.createElement("tr"), "No endpoints (add one with POST /api/admin/webhook-endpoints).");
    td.colSpan = 5;
    eps.appendChild(td.parentNode);
  }
  const body = $("#deliveries tbody");
  body.replaceChildren();
  for (const d of deliveries) {
    const tr = document.createElement("tr");
    tr.dataset.delivery = d.id;
    cell(tr, d.id);
    cell(tr, d.event_type);
    cell(tr, d.endpoint_id);
    cell(tr, d.order_id);
    cell(tr, d.status, "status");
    cell(tr, d.attempts, "num");
    cell(tr, when(d.updated_at));
    cell(tr, d.last_error, "err");
    const actions = cell(tr, "");
    if (d.status === "dead") actions.appendChild(button("Retry", () => redeliver(d.id)));
    body.appendChild(tr);
  }
}

async function redeliver(id) {
  try {
    await api("POST", "/api/admin/webhook-deliveries/" + id + "/retry", {});
    say("#merchant-msg", "Sending delivery " + id + " again.");
    await showMerchant();
  } catch (e) {
    say("#merchant-msg", "Delivery " + id + ": " + e.message, true);
  }
}

async function replay(id) {
  try {
    const { replay } = await api("POST", "/api/admin/events/" + id + "/replay", {});
    say("#events-msg", "Event " + id + ": " + replay.outcome + (replay.changed ? "" : " (nothing changed)"));
  } catch (e) {
    say("#events-msg", "Event " + id + ": " + e.message, true);
  }
}

let shownOrder = "";

// A buyer's orders, newest first, each with a button to show it.
async function findOrders(email) {
  const body = $("#order-list tbody");
  body.replaceChildren();
  $("#order-list").hidden = true;
  $("#timeline").replaceChildren();
  $("#order-summary").textContent = "";
  $("#order-actions").hidden = true;
  try {
    const r = await api("GET", "/api/admin/orders?limit=50&email=" + encodeURIComponent(email));
    for (const o of r.orders) {
      const tr = document.createElement("tr");
      cell(tr, o.id);
      cell(tr, o.status);
      cell(tr, o.total_minor + " " + o.currency);
      cell(tr, when(o.created_at));
      const td = document.createElement("td");
      td.appendChild(button("Show", () => showOrder(o.id)));
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $("#order-list").hidden = r.orders.length === 0;
    say("#order-msg", r.orders.length ? "" : "No orders for " + email + ".");
  } catch (e) {
    say("#order-msg", e.message, true);
  }
}

async function showOrder(id) {
  $("#order-id").value = id;
  shownOrder = id;
  const list = $("#timeline");
  list.replaceChildren();
  $("#order-summary").textContent = "";
  $("#order-actions").hidden = true;
  try {
    const r = await api("GET", "/api/admin/orders/" + encodeURIComponent(id));
    const o = r.order;
    $("#order-summary").textContent = o.id + " · " + o.status + " · " + o.total_minor + " " + o.currency + " · " + o.customer_email;
    for (const m of r.timeline) {
      const li = document.createElement("li");
      const what = document.createElement("span");
      what.className = "what";
      what.textContent = when(m.at) + " " + m.what;
      li.appendChild(what);
      li.appendChild(document.createTextNode(" " + m.detail));
      list.appendChild(li);
    }
    $("#order-actions").hidden = false;
    say("#order-msg", "");
  } catch (e) {
    say("#order-msg", e.message, true);
  }
}

// The manual actions on the order shown, each audited with the reason given.
async function orderAction(what) {
  const id = shownOrder;
  const reason = $("#order-reason").value.trim();
  try {
    if (what === "refund") {
      const amount = Number($("#order-amount").value) || undefined;
      const r = await api("POST", "/api/payments/refund", {
        order_id: id,
        amount_minor: amount,
        reason: reason || undefined,
      });
      say("#order-msg", "Refund " + r.id + ": " + r.status + ".");
    } else if (what === "recheck") {
      await api("POST", "/api/admin/orders/" + encodeURIComponent(id) + "/recheck-payment", reason ? { reason } : {});
      say("#order-msg", "Asked the provider again.");
    } else {
      const r = await api("POST", "/api/admin/orders/" + encodeURIComponent(id) + "/resolve", { reason });
      say("#order-msg", "Resolved; " + r.discarded_steps + " dead step(s) discarded.");
    }
    const msg = $("#order-msg").textContent;
    await showOrder(id);
    say("#order-msg", msg);
  } catch (e) {
    say("#order-msg", e.message, true);
  }
}

let ticks = 0;
async function refresh() {
  try {
    const work = [showQueues(), showDead(), showEvents(), showMerchant(), showAudit()];
    if (ticks++ % 5 === 0) work.push(showActivity());
    await Promise.all(work);
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.status === 401 || e.status === 403) return signOut(e.message);
    $("#status").textContent = "cannot refresh: " + e.message;
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  $("#board").hidden = true;
  $("#sign-out").hidden = true;
  $("#login").hidden = false;
  $("#status").textContent = "signed out";
  say("#login-msg", message || "");
}

async function signIn(t) {
  sessionStorage.setItem(KEY, t);
  try {
    await api("GET", "/api/admin/queues");
  } catch (e) {
    return signOut(e.message);
  }
  $("#login").hidden = true;
  $("#board").hidden = false;
  $("#sign-out").hidden = false;
  ticks = 0;
  await refresh();
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("#token").value.trim());
});
$("#order-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const wanted = $("#order-id").value.trim();
  if (wanted.includes("@")) findOrders(wanted);
  else if (wanted) showOrder(wanted);
});
$("#events-parked").addEventListener("change", () => {
  showEvents().catch((e) => say("#events-msg", e.message, true));
});
$("#audit-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  showAudit().catch((e) => { $("#status").textContent = "cannot read the audit log: " + e.message; });
});
$("#sign-out").addEventListener("click", () => signOut());
$("#order-refund").addEventListener("click", () => orderAction("refund"));
$("#order-recheck").addEventListener("click", () => orderAction("recheck"));
$("#order-resolve").addEventListener("click", () => orderAction("resolve"));
setInterval(() => { if (token()) refresh(); }, 2000);
if (token()) signIn(token());
