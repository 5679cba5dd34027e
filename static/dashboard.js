// The dashboard's own script: only what htmx cannot do by itself.
//  - failed requests (error status or no answer) become an error toast with a Retry button;
//  - toasts can be dismissed, and success/info toasts leave by themselves;
//  - "Copy" buttons copy to the clipboard;
//  - the playground renders the gateway's streamed reply as it arrives.
// Text from the server is only ever set with textContent, never parsed as HTML into the page.
(function () {
  "use strict";

  var AUTO_DISMISS_MS = 6000;

  function toastArea() {
    return document.getElementById("toasts");
  }

  function scheduleDismiss(toast) {
    if (toast.dataset.timer || toast.classList.contains("toast-error")) {
      return;
    }
    toast.dataset.timer = "1";
    window.setTimeout(function () { toast.remove(); }, AUTO_DISMISS_MS);
  }

  function showToast(level, message, retry) {
    var area = toastArea();
    if (!area) {
      return;
    }
    var existing = Array.prototype.find.call(area.querySelectorAll(".toast"), function (t) {
      return t.dataset.message === message;
    });
    if (existing) {
      return;
    }
    var toast = document.createElement("div");
    toast.className = "toast toast-" + level;
    toast.setAttribute("role", level === "error" ? "alert" : "status");
    toast.dataset.message = message;
    var text = document.createElement("span");
    text.className = "toast-text";
    text.textContent = message;
    toast.appendChild(text);
    if (retry) {
      var again = document.createElement("button");
      again.type = "button";
      again.className = "button small";
      again.textContent = "Retry";
      again.addEventListener("click", function () {
        toast.remove();
        retry();
      });
      toast.appendChild(again);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "\u00d7";
    toast.appendChild(close);
    area.appendChild(toast);
  }

  // The message of an error answer: the fragment's text, or a sentence about the status.
  function messageFrom(xhr) {
    var text = "";
    if (xhr && xhr.responseText) {
      var parsed = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var node = parsed.querySelector(".error-message");
      text = node ? node.textContent.trim() : "";
    }
    if (!text) {
      text = "The request failed (HTTP " + (xhr ? xhr.status : "?") + ").";
    }
    return text;
  }

  function retryFor(detail) {
    var elt = detail.elt;
    var config = detail.requestConfig;
    if (!window.htmx || !config) {
      return function () { window.location.reload(); };
    }
    return function () {
      if (!document.body.contains(elt)) {
        window.location.reload();
        return;
      }
      window.htmx.ajax(config.verb, config.path, { source: elt, target: detail.target });
    };
  }

  function wireHtmxErrors() {
    document.body.addEventListener("htmx:responseError", function (event) {
      showToast("error", messageFrom(event.detail.xhr), retryFor(event.detail));
    });
    document.body.addEventListener("htmx:sendError", function (event) {
      showToast("error", "The gateway did not answer. Check the connection, then retry.", retryFor(event.detail));
    });
    document.body.addEventListener("htmx:timeout", function (event) {
      showToast("error", "The gateway took too long to answer.", retryFor(event.detail));
    });
    // A successful answer after a lost connection: the connection toast has done its job.
    document.body.addEventListener("htmx:afterRequest", function (event) {
      if (!event.detail.successful) {
        return;
      }
      var area = toastArea();
      if (!area) {
        return;
      }
      area.querySelectorAll(".toast-error").forEach(function (toast) {
        if ((toast.dataset.message || "").indexOf("did not answer") !== -1) {
          toast.remove();
        }
      });
    });
  }

  function copyText(value, button) {
    function done(ok) {
      showToast(ok ? "success" : "warning", ok ? "Copied." : "Copy failed: select the text and copy it yourself.");
      if (ok && button) {
        button.textContent = "Copied";
        window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
      }
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = value;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (error) {
        ok = false;
      }
      area.remove();
      if (button) {
        button.focus();
      }
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  }

  function wireClicks() {
    document.addEventListener("click", function (event) {
      var target = event.target instanceof Element ? event.target : null;
      if (!target) {
        return;
      }
      var close = target.closest(".toast-close");
      if (close) {
        close.closest(".toast").remove();
        return;
      }
      var copy = target.closest("[data-copy]");
      if (copy) {
        copyText(copy.getAttribute("data-copy"), copy);
      }
    });
  }

  function wireToasts() {
    var area = toastArea();
    if (!area) {
      return;
    }
    area.querySelectorAll(".toast").forEach(scheduleDismiss);
    new MutationObserver(function () {
      area.querySelectorAll(".toast").forEach(scheduleDismiss);
    }).observe(area, { childList: true });
  }

  // -- playground ---------------------------------------------------------------------------

  function formatMs(value) {
    if (value === null || value === undefined) {
      return "\u2013";
    }
    return value < 1000 ? Math.round(value) + " ms" : (value / 1000).toFixed(2) + " s";
  }

  function wirePlayground() {
    var form = document.getElementById("playground-form");
    if (!form) {
      return;
    }
    var byId = function (id) { return document.getElementById(id); };
    var reply = byId("play-reply");
    var status = byId("play-status");
    var errorBox = byId("play-error");
    var send = byId("play-send");
    var stop = byId("play-stop");
    var controller = null;

    function reset() {
      reply.textContent = "";
      errorBox.hidden = true;
      errorBox.textContent = "";
      ["play-server", "play-ttft", "play-total", "play-tokens"].forEach(function (id) {
        byId(id).textContent = "\u2013";
      });
    }

    function showError(message) {
      errorBox.textContent = message;
      errorBox.hidden = false;
      status.textContent = "The request failed.";
    }

    function showServer(event) {
      var cell = byId("play-server");
      cell.textContent = "";
      var link = document.createElement("a");
      link.href = form.dataset.serverUrl.replace("SERVER_ID", encodeURIComponent(event.server_id));
      link.textContent = event.model + " \u00b7 " + event.server_id.slice(0, 8);
      cell.appendChild(link);
      if (event.attempt > 1) {
        cell.appendChild(document.createTextNode(" (attempt " + event.attempt + ")"));
      }
    }

    function handle(event) {
      if (event.event === "server") {
        showServer(event);
        status.textContent = "Waiting for the first token\u2026";
      } else if (event.event === "delta") {
        reply.textContent += event.text;
        status.textContent = "Receiving\u2026";
      } else if (event.event === "usage") {
        var parts = [event.prompt_tokens, event.completion_tokens, event.total_tokens].map(function (n) {
          return n === null || n === undefined ? "?" : String(n);
        });
        byId("play-tokens").textContent = parts.join(" / ");
      } else if (event.event === "done") {
        byId("play-ttft").textContent = formatMs(event.ttft_ms);
        byId("play-total").textContent = formatMs(event.total_ms);
        status.textContent = "Done" + (event.finish_reason ? " (" + event.finish_reason + ")" : "") + ".";
      } else if (event.event === "error") {
        showError(event.message);
      }
    }

    async function run() {
      reset();
      controller = new AbortController();
      form.classList.add("is-busy");
      send.disabled = true;
      stop.disabled = false;
      status.textContent = "Sending\u2026";
      try {
        var response = await fetch(form.action, {
          method: "POST",
          body: new FormData(form),
          headers: { "X-CSRF-Token": form.elements.csrf_token.value, "Accept": "application/x-ndjson" },
          signal: controller.signal,
          credentials: "same-origin",
        });
        if (response.redirected || !response.ok) {
          showError(response.redirected ? "Your session has ended; reload the page and sign in." : "The gateway answered HTTP " + response.status + ".");
          return;
        }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        for (;;) {
          var chunk = await reader.read();
          if (chunk.done) {
            break;
          }
          buffer += decoder.decode(chunk.value, { stream: true });
          var lines = buffer.split("\n");
          buffer = lines.pop();
          lines.forEach(function (line) {
            if (line.trim()) {
              handle(JSON.parse(line));
            }
          });
        }
        if (buffer.trim()) {
          handle(JSON.parse(buffer));
        }
      } catch (error) {
        if (error.name === "AbortError") {
          status.textContent = "Stopped.";
        } else {
          showError("The connection to the gateway broke: " + error.message);
        }
      } finally {
        form.classList.remove("is-busy");
        send.disabled = false;
        stop.disabled = true;
        controller = null;
      }
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!controller) {
        run();
      }
    });
    stop.addEventListener("click", function () {
      if (controller) {
        controller.abort();
      }
    });
  }

  function start() {
    wireHtmxErrors();
    wireClicks();
    wireToasts();
    wirePlayground();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
