"""Kiln's composition root: the command line (`kiln.cli`, run by main.py) puts the engine, the
node types and the app together. engine/ imports neither nodes nor app; this package may."""
