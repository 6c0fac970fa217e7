/*
 * The ClickMe experiment (jsPsych 8 timeline): consent, instructions, practice, the trials, debrief.
 *
 * Participant and study ids come from the URL as crowdsourcing platforms pass them (PROLIFIC_PID and
 * STUDY_ID; or participant and study); without a participant id the page makes a random one and keeps it
 * in localStorage. Nothing else about the participant is collected. A participant the server already
 * knows (a reload, a reconnect) skips consent and instructions and resumes at the next stimulus.
 */
(function () {
  "use strict";

  const ID_RE = /^[A-Za-z0-9_.\-]{1,64}$/;
  const ANON_KEY = "clickme.anonymous-id";
  const root = document.getElementById("experiment");

  function showMessage(text) {
    const p = document.createElement("p");
    p.className = "clickme-text";
    p.textContent = text;
    root.replaceChildren(p);
  }

  function anonymousId() {
    let id = null;
    try {
      id = window.localStorage.getItem(ANON_KEY);
    } catch (err) {
      id = null;
    }
    if (!id || !ID_RE.test(id)) {
      const bytes = window.crypto.getRandomValues(new Uint8Array(12));
      id = "anon-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      try {
        window.localStorage.setItem(ANON_KEY, id);
      } catch (err) {
        /* private mode: the id lasts for this page only */
      }
    }
    return id;
  }

  function identifiers() {
    const q = new URLSearchParams(window.location.search);
    const study_id = q.get("STUDY_ID") || q.get("study") || "default";
    const participant_id = q.get("PROLIFIC_PID") || q.get("participant") || anonymousId();
    if (!ID_RE.test(study_id) || !ID_RE.test(participant_id)) return null;
    return { study_id, participant_id };
  }

  // ------------------------------------------------------------------------------------------ pages
  // Static texts only: no data is ever written as HTML (the consent text is escaped).

  // The consent text is the server's (`drawgap clickme serve --consent FILE`): plain text, escaped here.
  const escapeHtml = (text) =>
    String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  function consentHtml(consent) {
    const paragraphs = consent.paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join("");
    return `<div class="clickme-text"><h2>${escapeHtml(consent.title)}</h2>${paragraphs}</div>`;
  }

  const INSTRUCTION_PAGES = [
    `<div class="clickme-text"><h2>How to play</h2>
      <p>Help your AI partner recognize as many drawings as possible, as quickly as possible.</p>
      <p>Each drawing is shown with its category. Your partner cannot see it: it only sees the parts that you
      reveal by painting over them with the mouse (press the button and move).</p></div>`,
    `<div class="clickme-text"><h2>Scoring</h2>
      <p>Paint over the parts of the drawing that help <em>you</em> recognize it. Your partner guesses as you
      paint; until it has seen enough to name anything it says "nothing yet". As soon as it names the right
      category you score points: the more time left, the more points.</p>
      <p>You have a few seconds per drawing; the bar shows the time left. If a drawing is strange or looks
      mislabelled, press <strong>Skip</strong>.</p></div>`,
    `<div class="clickme-text"><h2>Practice</h2>
      <p>First a practice drawing that does not count. Press <strong>Start</strong>, then paint.</p></div>`,
  ];

  const OTHER_BROWSER = "This study link was already started in another browser or tab: please continue there.";
  const TRY_LATER = "The study could not be started just now. Please try again in a few minutes.";

  const DEBRIEF_HTML = `
    <div class="clickme-text">
      <h2>Thank you!</h2>
      <p>Your paintings show which parts of a drawing people rely on to recognize it; we compare them with
      what machine models rely on.</p>
      <p>Your final score: <span id="clickme-final-score"></span></p>
      <div id="clickme-code-block">
        <p>Your completion code: <span id="clickme-code" class="clickme-code"></span></p>
        <p>Enter this code on the study platform to finish. You can close this page now.</p>
      </div>
      <p id="clickme-refused" class="clickme-refused" hidden>No completion code: <span id="clickme-refused-why"></span>.
        Please contact the researcher through the study platform.</p>
    </div>`;

  // ------------------------------------------------------------------------------------------ main

  async function main() {
    const ids = identifiers();
    if (!ids) {
      showMessage("This link is not valid: the participant or study identifier has unexpected characters.");
      return;
    }
    await ClickMeApi.flushPending();
    // Only the browser that started a participant holds their token: without it, start (after consent).
    let state = null;
    if (ClickMeApi.hasToken(ids)) {
      try {
        state = await ClickMeApi.getParticipant(ids);
      } catch (err) {
        if (err.status === 401 || err.status === 403) {
          showMessage(OTHER_BROWSER);
          return;
        }
        throw err;
      }
    }
    const consent = state ? null : await ClickMeApi.getConsent(); // a new participant sees it first
    root.replaceChildren(); // drop "Loading…": jsPsych draws into this element
    const jsPsych = initJsPsych({ display_element: root });

    const trialNode = (practice) => ({
      type: jsPsychClickMe,
      image_url: () => current(practice).image_url,
      category: () => current(practice).category,
      stimulus_id: () => current(practice).stimulus_id,
      position: () => current(practice).position,
      practice,
      canvas_size: () => state.config.canvas_size,
      brush_px: () => state.config.brush_px,
      time_limit_s: () => state.config.time_limit_s,
      sample_interval_ms: () => state.config.sample_interval_ms,
      points_per_query: () => state.config.points_per_query,
      max_points_per_trial: () => state.config.max_points_per_trial,
      score_total: () => state.score_total,
      progress_label: () =>
        practice ? "Practice" : `Drawing ${state.next_trial + 1} of ${state.trials.length}`,
      ask_partner: (points, trialId) => ClickMeApi.askPartner(ids, current(practice).stimulus_id, trialId, points),
      save: async (data, onStatus) => {
        const body = { ...ids, ...data };
        delete body.category;
        try {
          state = await ClickMeApi.saveTrial(body, () => onStatus("Connection problem: saving again…"));
        } catch (err) {
          // Refused for good (e.g. the same participant in two tabs): continue from the server's state.
          console.warn("trial refused:", err.detail);
          state = (await ClickMeApi.getParticipant(ids)) || state;
        }
      },
    });
    const current = (practice) =>
      practice ? state.practice[state.next_practice] : state.trials[state.next_trial];
    const morePractice = () => state.next_practice < state.practice.length && state.next_trial === 0;
    const moreTrials = () => state.next_trial < state.trials.length;

    const timeline = [];
    if (!state) {
      timeline.push({
        type: jsPsychHtmlButtonResponse,
        stimulus: consentHtml(consent),
        choices: ["I agree", "I do not agree"],
        on_finish: (data) => {
          if (data.response !== 0) {
            jsPsych.abortExperiment("<p>You did not agree to take part. You can close this page.</p>");
          }
        },
      });
      timeline.push({
        type: jsPsychCallFunction,
        async: true,
        func: (done) => {
          ClickMeApi.createParticipant(ids).then(
            (s) => {
              state = s;
              done({});
            },
            (err) => {
              jsPsych.abortExperiment(`<p class="clickme-text">${err.status === 409 ? OTHER_BROWSER : TRY_LATER}</p>`);
            });
        },
      });
      timeline.push({ type: jsPsychInstructions, pages: INSTRUCTION_PAGES, show_clickable_nav: true });
    } else if (!state.completed) {
      timeline.push({
        type: jsPsychHtmlButtonResponse,
        stimulus: '<div class="clickme-text"><h2>Welcome back</h2><p>You continue where you stopped.</p></div>',
        choices: ["Continue"],
      });
    }
    timeline.push({ timeline: [trialNode(true)], conditional_function: morePractice, loop_function: morePractice });
    timeline.push({
      timeline: [{
        type: jsPsychHtmlButtonResponse,
        stimulus: '<div class="clickme-text"><h2>Ready</h2><p>Now the drawings that count.</p></div>',
        choices: ["Begin"],
      }],
      conditional_function: () => state.next_trial === 0 && moreTrials(),
    });
    timeline.push({ timeline: [trialNode(false)], conditional_function: moreTrials, loop_function: moreTrials });
    timeline.push({
      type: jsPsychHtmlButtonResponse,
      stimulus: DEBRIEF_HTML,
      choices: [],
      on_load: () => {
        document.getElementById("clickme-code").textContent = state.completion_code || "";
        document.getElementById("clickme-final-score").textContent = String(Math.round(state.score_total));
        if (!state.completion_code && state.completion_refused) {
          document.getElementById("clickme-code-block").hidden = true;
          document.getElementById("clickme-refused-why").textContent = state.completion_refused;
          document.getElementById("clickme-refused").hidden = false;
        }
      },
    });
    await jsPsych.run(timeline);
  }

  main().catch((err) => {
    console.error(err);
    showMessage("Something went wrong. Please reload the page; your progress is saved.");
  });
})();
