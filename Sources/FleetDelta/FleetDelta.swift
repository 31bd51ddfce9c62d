// Delta packages; see docs/DELTA.md.
