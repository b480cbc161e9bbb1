"""The SQL engine's phases (server/kpi/query.py, issue 14): the order compute_report runs them
in keeps what each needs before it, and statements bind their values instead of inlining
them. The figures themselves are proven by the reference oracle (test_equivalence.py)."""

from __future__ import annotations

from sqlalchemy.dialects import sqlite

from server.kpi import incident_figures, incident_months, knowledge_figures, percentiles, prepare, state_time
from server.kpi.query import PHASES
from server.kpi.report_context import statement


def position(phase: object) -> int:
    return PHASES.index(phase)


def test_every_phase_runs_after_what_it_reads() -> None:
    assert position(prepare.prepare) == 0  # temporary tables, bounds and kpi_pieces first
    assert position(state_time.required_time) < position(state_time.state_time)
    # the raw incident phases read only what the rollups did not serve
    assert position(incident_months.resolved_rolled) < position(incident_figures.load_incidents)
    for phase in (incident_figures.resolved, incident_figures.counts, incident_figures.episodes):
        assert position(incident_figures.load_incidents) < position(phase)
    # "resolve time without a link" is the rest of resolved's sums
    assert position(incident_figures.resolved) < position(knowledge_figures.knowledge)
    assert position(incident_figures.load_incidents) < position(percentiles.percentiles)
    assert len(set(PHASES)) == len(PHASES)


def test_a_list_parameter_is_bound_not_inlined() -> None:
    sql = "SELECT 1 FROM kpi_pieces p WHERE p.customer_id IN :cal_ids"
    params = {"cal_ids": [3, 5], "t0": 1.0}
    clause = statement(sql, params).bindparams(cal_ids=[3, 5])
    compiled = clause.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True})
    assert "IN (?, ?)" in str(compiled), str(compiled)
    assert list(compiled.params.values()) == [3, 5]
