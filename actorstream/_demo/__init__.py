"""The app behind ``actorstream demo``, shipped in the package so the demo runs from a wheel."""
