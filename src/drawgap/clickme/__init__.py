"""ClickMe: the online psychophysics game that collects human diagnostic features (SPEC.md 5.1).

A participant sees a drawing and its category and paints over the parts that matter; only the painted
squares are shown to an AI partner (the ProtoNet critic with one exemplar per category as support), and the
sooner the partner names the category, the more points. The painted points are the human importance data.

    drawgap clickme stimuli DATASET.npz --out STIMULI     # stimuli.py: PNGs, manifest, partner
    drawgap clickme serve STIMULI --db URL                # app.py: page, sequences, partner, trials
    drawgap clickme status --db URL                       # status.py: progress per stimulus
    drawgap clickme export --db URL --out clicks.npz      # export.py: the clicks file (format there)
    drawgap clickme migrate --db URL                      # migrate.py: upgrade an older database (migrations/)

Parts: config.py (settings), stimuli.py, partner.py (reveal + classify) and batcher.py (micro-batching),
sequence.py (balanced sequences), db.py (tables, engines), migrate.py and migrations/ (schema versions,
Alembic) and store.py (transactions), schemas.py and
security.py (validation, limits, headers, admin token), simulate.py and testing.py (simulated participants,
local servers for tests and benchmarks), web/ (the jsPsych 8 page and its ClickMe trial plugin).
The server's dependencies are the `clickme` extra: `pip install drawgap[clickme]`.
"""
