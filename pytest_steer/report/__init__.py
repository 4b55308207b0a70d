"""The steering report: PNG figures (`figures`) and HTML (`html`) for pytest-html's summary
section or a standalone page.

Submodules are imported where used, so loading the plugin does not pull in matplotlib.
"""
