// The reference checkout pages' script. Everything goes through the public API; values
// from the server are put in the page as text only.
"use strict";

const $ = (sel) => document.querySelector(sel);

async function api(method, path, body, extraHeaders) {
  const r = await fetch(path, {
    method,
    headers: Object.assign({ "Content-Type": "application/json" }, extraHeaders || {}),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error((answer.error && answer.error.message) || ("HTTP " + r.status));
    err.status = r.status;
    err.code = answer.error && answer.error.code;
    throw err;
  }
  return answer;
}

// What proves an order is this browser's: the buyer token POST /api/orders answered, and the
// provider's checkout id create-order answered (the verify call names it). Kept in
// localStorage, so a success page opened in another tab of this browser has them too.
const KEPT = "fulfilld.order.";

function keep(orderId, fields) {
  const had = kept(orderId) || {};
  try {
    localStorage.setItem(KEPT + orderId, JSON.stringify(Object.assign(had, fields)));
  } catch (e) {
    // Storage full or off: this tab can still finish, the sign-in link covers the rest.
  }
}

function kept(orderId) {
  try {
    return JSON.parse(localStorage.getItem(KEPT + orderId) || "null");
  } catch (e) {
    return null;
  }
}

// Minor units as the currency counts them (`decimals`, from the catalogue: 2 for USD, 0
// for JPY, 3 for KWD), without floats.
function money(minor, currency, decimals) {
  const d = Number.isInteger(decimals) ? decimals : 2;
  const digits = String(Math.abs(minor)).padStart(d + 1, "0");
  const whole = d ? digits.slice(0, -d) + "." + digits.slice(-d) : digits;
  return (minor < 0 ? "-" : "") + whole + " " + String(currency).toUpperCase();
}

// What the access cookie's buyer may use, in words (`none` when nothing).
function accessText(me, none) {
  return me.access.length
    ? "Your access: " + me.access.map((a) => a.feature).join(", ") + "."
    : none;
}

function say(text, bad) {
  const m = $("#msg");
  m.textContent = text;
  m.classList.toggle("bad", !!bad);
}

// --- /checkout -------------------------------------------------------------------------

async function checkoutPage() {
  const { products } = await api("GET", "/api/products");
  const body = $("#products tbody");
  for (const p of products) {
    const tr = document.createElement("tr");
    for (const text of [p.name, money(p.price_minor, p.currency, p.decimals), String(p.available)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    const qty = document.createElement("input");
    qty.type = "number";
    qty.min = "0";
    qty.max = String(p.available);
    qty.value = "0";
    qty.dataset.sku = p.sku;
    qty.className = "qty";
    td.appendChild(qty);
    tr.appendChild(td);
    body.appendChild(tr);
  }
  $("#buy").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const items = [...document.querySelectorAll("input.qty")]
      .map((i) => ({ sku: i.dataset.sku, qty: Number(i.value) }))
      .filter((i) => i.qty > 0);
    if (!items.length) return say("Pick at least one product.", true);
    $("#pay").disabled = true;
    try {
      const order = await api("POST", "/api/orders", {
        customer_email: $("#email").value.trim(),
        items,
      });
      keep(order.id, { buyer_token: order.buyer_token });
      const co = await api("POST", "/api/payments/create-order", {
        order_id: order.id,
        provider: $("#provider").value,
      }, { "X-Buyer-Token": order.buyer_token });
      keep(order.id, { provider: co.provider, provider_order_id: co.provider_order_id });
      if (!co.checkout_url && co.client && co.client.script) return await checkoutJs(order, co);
      say("Taking you to the payment page…");
      location.href = co.checkout_url;
    } catch (e) {
      say(e.message, true);
      $("#pay").disabled = false;
    }
  });
}

function loadScript(src) {
  return new Promise((loaded, failed) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = loaded;
    s.onerror = () => failed(new Error("the payment window could not be loaded"));
    document.head.appendChild(s);
  });
}

// Razorpay: its Checkout.js opens over this page. A failed attempt leaves it open for the
// buyer to try again on the same order; a success hands back a signed answer, which the
// engine checks (and which proves the order) before the success page.
async function checkoutJs(order, co) {
  await loadScript(co.client.script);
  const rzp = new window.Razorpay({
    key: co.client.key_id,
    order_id: co.provider_order_id,
    amount: co.amount_minor,
    currency: co.currency,
    prefill: { email: $("#email").value.trim() },
    handler: async (answer) => {
      keep(order.id, { razorpay: answer });
      say("Payment received, checking it…");
      try {
        await api("POST", "/api/payments/verify", { order_id: order.id, provider: "razorpay", payload: answer });
      } catch (e) {
        // The success page keeps checking; the webhook settles it either way.
      }
      location.href = "/checkout/success?order=" + encodeURIComponent(order.id);
    },
    modal: {
      ondismiss: () => {
        say("The payment window was closed: pay when you are ready.");
        $("#pay").disabled = false;
      },
    },
  });
  rzp.on("payment.failed", (answer) =>
    say("The payment failed (" + ((answer.error && answer.error.description) || "declined") +
      "): try again in the payment window, or another way.", true));
  rzp.open();
}

// --- /checkout/success -----------------------------------------------------------------

const PAID = ["paid", "fulfilled", "partially_refunded"];
const FAILED = ["payment_failed"];
// How each provider's checkout is named in a verify call (and, without the buyer token, in
// the activation), from the order's payment.
const PROOF = {
  stripe: (mine) => mine.provider_order_id && { session_id: mine.provider_order_id },
  paypal: (mine) => mine.provider_order_id && { orderID: mine.provider_order_id },
  // Razorpay's signed answer, as Checkout.js handed it over.
  razorpay: (mine) => mine.razorpay,
};

// Paid, and the provider's capture confirmed (an order is "paid" from the provider's first
// word; `confirm_capture` then checks the capture, which may turn out pending or declined).
function confirmed(order) {
  return PAID.includes(order.status) && order.waiting_on !== "confirm_capture" && order.waiting_on !== "settlement";
}

function show(id) {
  for (const s of ["processing", "settling", "paid", "failed", "timeout"]) $("#" + s).hidden = s !== id;
}

async function successPage() {
  const params = new URLSearchParams(location.search);
  const orderId = params.get("order") || "";
  // After this long without an answer the page says so instead of spinning (the query
  // parameter is for tests and impatient demos).
  const timeoutMs = (Number(params.get("timeout_s")) || 30) * 1000;
  if (!orderId) {
    show("failed");
    return say("No order named in this link.", true);
  }
  // What the provider put in this page's address when it sent the buyer back: Stripe the
  // session's id, PayPal the approved order's id (with PayerID). A browser that does not keep
  // the order's buyer token proves the order with it.
  const back = params.get("session_id")
    ? { provider: "stripe", provider_order_id: params.get("session_id") }
    : params.get("token") && params.get("PayerID")
      ? { provider: "paypal", provider_order_id: params.get("token") }
      : {};
  const mine = Object.assign(back, kept(orderId) || {});
  // The order's token, or else what the provider sent back (in the query), proves it; without
  // either (another browser) the order still answers its status.
  const redirectProof = PROOF[mine.provider] && PROOF[mine.provider](mine);
  const proof = mine.buyer_token ? { "X-Buyer-Token": mine.buyer_token } : {};
  const proofQuery = mine.buyer_token || !redirectProof
    ? ""
    : "?" + new URLSearchParams(Object.assign({ provider: mine.provider }, redirectProof));
  const get = (path) => api("GET", path + proofQuery, undefined, proof);
  const read = () => get("/api/orders/" + encodeURIComponent(orderId));
  let started = Date.now();
  let lastVerify = 0;
  let timer = null;

  async function tick() {
    let order;
    try {
      order = await read();
    } catch (e) {
      say(e.message, true);
      return schedule();
    }
    // The provider holds the capture (days, not seconds): say so, and look now and then.
    if (order.waiting_on === "settlement") {
      show("settling");
      return schedule(10000);
    }
    if (confirmed(order)) return paid(order);
    if (FAILED.includes(order.status)) return show("failed");
    // The webhook is late: ask the engine to check with the provider (it throttles these).
    const payload = PROOF[mine.provider] && PROOF[mine.provider](mine);
    if (payload && Date.now() - started >= 3000 && Date.now() - lastVerify >= 4000) {
      lastVerify = Date.now();
      try {
        const v = await api("POST", "/api/payments/verify", {
          order_id: orderId,
          provider: mine.provider,
          payload,
        });
        if (PAID.includes(v.status)) {
          const now = await read();
          if (confirmed(now)) return paid(now);
        }
      } catch (e) {
        // Not paid yet, or the provider is slow: keep waiting for the webhook.
      }
    }
    if (Date.now() - started >= timeoutMs) return show("timeout");
    schedule();
  }

  function schedule(ms) {
    timer = setTimeout(tick, ms || 2000);
  }

  async function paid(order) {
    clearTimeout(timer);
    $("#paid-order").textContent = order.id;
    $("#paid-status").textContent = order.status;
    show("paid");
    say("");
    const redirect = PROOF[mine.provider] && PROOF[mine.provider](mine);
    const proof = mine.buyer_token
      ? { buyer_token: mine.buyer_token }
      : redirect
        ? { provider: mine.provider, payload: redirect }
        : null;
    if (!proof) {
      $("#access").textContent = "To see your access in this browser, sign in with the link we email you.";
      return;
    }
    try {
      await api("POST", "/api/entitlements/activate", Object.assign({ order_id: order.id }, proof));
      // What the order grants is granted by its pipeline, after the payment: wait (up to
      // 30 s) for the order to move on from "paid" before reading the access.
      for (let i = 0; order.status === "paid" && i < 30; i++) {
        $("#access").textContent = "Setting up your access…";
        await new Promise((done) => setTimeout(done, 1000));
        order = await read();
        $("#paid-status").textContent = order.status;
      }
      documents(order);
      const me = await api("GET", "/api/entitlements/me");
      $("#access").textContent = accessText(me, order.status === "paid"
        ? "Your access is still being set up: it appears here, and in your email, shortly."
        : "Nothing to unlock with this order.");
    } catch (e) {
      $("#access").textContent = "Your access could not be activated yet: " + e.message;
    }
  }

  // The invoice and credit notes the order links (once issued), each opened from a copy
  // fetched with this page's proof: a plain link could not send the token.
  async function documents(order) {
    if (!order.links) return;
    const docs = (order.links.invoice ? [order.links.invoice] : []).concat(order.links.credit_notes);
    const list = $("#documents");
    list.replaceChildren();
    for (const doc of docs) {
      const a = document.createElement("a");
      a.textContent = doc.number;
      a.href = "#";
      a.addEventListener("click", async (ev) => {
        ev.preventDefault();
        try {
          const r = await fetch(doc.href + proofQuery, { headers: proof });
          if (!r.ok) throw new Error("HTTP " + r.status);
          const url = URL.createObjectURL(new Blob([await r.text()], { type: "text/html" }));
          window.open(url, "_blank", "noopener");
        } catch (e) {
          say("The document could not be opened: " + e.message, true);
        }
      });
      const li = document.createElement("li");
      li.append(a);
      list.append(li);
    }
  }

  $("#retry").addEventListener("click", () => {
    started = Date.now();
    show("processing");
    tick();
  });
  show("processing");
  tick();
}

// --- /checkout/sign-in ------------------------------------------------------------------
// Without a token: ask for a link by email. With one (the emailed link): trade it for the
// access cookie, once, and take it out of the address bar.

async function signInPage() {
  function signedIn(me) {
    $("#ask").hidden = true;
    $("#who").textContent = me.customer_email;
    $("#access").textContent = accessText(me, "Nothing to unlock at the moment.");
    $("#signed-in").hidden = false;
  }
  $("#ask").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#send").disabled = true;
    try {
      const r = await api("POST", "/api/entitlements/sign-in", { email: $("#email").value });
      $("#sent").textContent = "Check your inbox: " + r.message + ".";
      $("#sent").hidden = false;
      say("");
    } catch (e) {
      say(e.message, true);
    } finally {
      $("#send").disabled = false;
    }
  });
  const token = new URLSearchParams(location.search).get("token");
  if (token) {
    history.replaceState(null, "", location.pathname);
    try {
      await api("POST", "/api/entitlements/sign-in/confirm", { token });
      signedIn(await api("GET", "/api/entitlements/me"));
    } catch (e) {
      say(e.message, true);
    }
    return;
  }
  try {
    signedIn(await api("GET", "/api/entitlements/me"));
  } catch (e) {
    // Not signed in on this device yet: the form is the way.
  }
}

if (document.body.dataset.page === "checkout") checkoutPage().catch((e) => say(e.message, true));
if (document.body.dataset.page === "success") successPage();
if (document.body.dataset.page === "sign-in") signInPage();
