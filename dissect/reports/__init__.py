"""Reports: what runs write and print: tables with their model columns, console summaries, figures.

* :mod:`dissect.reports.tables`: model columns, banners, subtitles, terminal tables;
* :mod:`dissect.reports.dissection`, :mod:`dissect.reports.attention`, :mod:`dissect.reports.evaluation`:
  each study's files and console report;
* :mod:`dissect.reports.figures`, :mod:`dissect.reports.attention_figures`,
  :mod:`dissect.reports.evaluation_figures` (drawn on :mod:`dissect.reports.figure_io`): the figures.
"""
