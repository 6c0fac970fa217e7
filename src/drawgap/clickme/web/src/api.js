/*
 * The page's calls to the ClickMe server. Trials are never lost: a finished trial is kept in localStorage
 * until the server acknowledges it, sent again (with the same trial id, which the server stores once)
 * after any failure, and sent again when the page is reloaded.
 *
 * A participant's secret token is made here, before their start is sent, and proposed to the server with it
 * (the server keeps it when it is as strong as its own, else answers with one of its own); every later
 * request for them carries it (X-Participant-Token). Made before the start, a start whose answer was lost
 * can be sent again with the same token, and the server recognizes it instead of refusing a second start.
 * It is kept in localStorage, per study and participant, so that a reload or a reopened tab continues; the
 * participant id alone (it is in the link) gives nobody else their session.
 */
var ClickMeApi = (function () {
  "use strict";

  const PENDING_KEY = "clickme.pending-trials";
  const TOKEN_HEADER = "x-participant-token";
  const tokenKey = (ids) => `clickme.token.${ids.study_id}/${ids.participant_id}`;

  function getToken(ids) {
    try {
      return window.localStorage.getItem(tokenKey(ids));
    } catch (err) {
      return memoryTokens[tokenKey(ids)] || null;
    }
  }

  /** 256 random bits as URL-safe base64 (43 characters), as the server's own tokens. */
  function newToken() {
    const bytes = window.crypto.getRandomValues(new Uint8Array(32));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  const memoryTokens = {}; // storage disabled: the token lasts for this page only
  function setToken(ids, token) {
    memoryTokens[tokenKey(ids)] = token;
    try {
      if (token) window.localStorage.setItem(tokenKey(ids), token);
      else window.localStorage.removeItem(tokenKey(ids));
    } catch (err) {
      /* private mode: kept in memory above */
    }
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const retryable = (status) => status === 0 || status === 408 || status === 429 || status >= 500;

  async function request(method, path, body, { retry = false, onRetry = null, ids = null } = {}) {
    let delay = 400;
    const headers = body === undefined ? {} : { "content-type": "application/json" };
    const token = ids ? getToken(ids) : null;
    if (token) headers[TOKEN_HEADER] = token;
    for (let attempt = 1; ; attempt++) {
      let status = 0;
      let detail = "network error";
      try {
        const resp = await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: "no-store",
        });
        if (resp.ok) return await resp.json();
        status = resp.status;
        detail = ((await resp.json().catch(() => null)) || {}).detail || resp.statusText;
      } catch (err) {
        status = 0;
      }
      if (!retry || !retryable(status)) throw new ApiError(status, detail);
      if (onRetry) onRetry(attempt, status);
      await sleep(delay * (1 + Math.random() / 2));
      delay = Math.min(delay * 2, 8000);
    }
  }

  function pending() {
    try {
      return JSON.parse(window.localStorage.getItem(PENDING_KEY) || "[]");
    } catch (err) {
      return [];
    }
  }

  function setPending(list) {
    try {
      window.localStorage.setItem(PENDING_KEY, JSON.stringify(list));
    } catch (err) {
      /* storage full or disabled: the in-memory retry loop still holds the trial */
    }
  }

  async function sendTrial(body, onRetry) {
    try {
      const ids = { study_id: body.study_id, participant_id: body.participant_id };
      return await request("POST", "/api/trials", body, { retry: true, onRetry, ids });
    } finally {
      // Acknowledged, or refused for good (a 4xx that a retry cannot fix): no longer pending.
      setPending(pending().filter((t) => t.trial_id !== body.trial_id));
    }
  }

  return {
    ApiError,
    request,
    /** Whether this browser holds the participant's token (it started them). */
    hasToken(ids) {
      return !!getToken(ids);
    },
    /** The participant's state, or null when the server does not know them (then the token is dropped). */
    async getParticipant(ids) {
      try {
        const path = `/api/participants/${encodeURIComponent(ids.study_id)}/${encodeURIComponent(ids.participant_id)}`;
        return await request("GET", path, undefined, { retry: true, ids });
      } catch (err) {
        if (err.status === 404) {
          setToken(ids, null);
          return null;
        }
        throw err;
      }
    },
    /** The consent page's text: {title, paragraphs, sha256}, plain text. */
    getConsent() {
      return request("GET", "/api/consent", undefined, { retry: true });
    },
    /**
     * Start the participant with a token made here (sent again by every retry of the start); the server's
     * answer carries the token it kept, kept for every later request. A refused start drops a token made here.
     */
    async createParticipant(ids) {
      const proposed = !getToken(ids);
      if (proposed) setToken(ids, newToken());
      let state;
      try {
        state = await request("POST", "/api/participants", { ...ids, consent: true }, { retry: true, ids });
      } catch (err) {
        if (proposed) setToken(ids, null);
        throw err;
      }
      if (state.participant_token) setToken(ids, state.participant_token);
      delete state.participant_token;
      return state;
    },
    /** The partner's answer, or null if there is none this time (too fast, network): painting goes on. */
    async askPartner(ids, stimulusId, trialId, points) {
      try {
        return await request("POST", "/api/partner", { ...ids, trial_id: trialId, stimulus_id: stimulusId, points }, { ids });
      } catch (err) {
        return null;
      }
    },
    /** Store a finished trial; resolves with the participant's new state once the server has it. */
    saveTrial(body, onRetry) {
      setPending([...pending().filter((t) => t.trial_id !== body.trial_id), body]);
      return sendTrial(body, onRetry);
    },
    /** Send trials left pending by an earlier visit (stored once, even if they had arrived). */
    async flushPending() {
      for (const body of pending()) {
        try {
          await sendTrial(body, null);
        } catch (err) {
          console.warn("dropped a pending trial the server refused:", err.detail);
        }
      }
    },
  };
})();
