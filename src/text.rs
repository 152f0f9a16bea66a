//! Text for HTML pages (receipts, invoices, the sandbox's pages).

/// Text made safe to place in HTML (element content and quoted attributes).
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
