"""Aggregation of a sweep: tables, curves, filter visualisation, FAU rankings, the report.

Entry point: ``fercluster.analysis.report.aggregate(cfg, console=None)``. The way of the data:
``collect`` (run directories) -> ``tables`` / ``figures`` (accuracy) -> ``dataset_section``
(``filters``: top images and guided backprop; ``kl``: FAU rankings; ``agreement``: planted truth,
``agreement_section``: its report section)
-> ``render`` (Markdown and self-contained HTML). ``bench`` times it on fabricated jobs.
"""
