"""Orchestration above ``engine``, ``evaluation`` and ``index``: what each tool does, end to end.

``train`` (run folders, resume), ``evaluate``, ``index`` (export and search), ``diagnostics``,
``study`` (resumable grids of training runs), ``demo``. Nothing below imports from here.
"""
