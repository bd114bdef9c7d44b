"""Test support shared by the test suites, ``bench`` and ``tools``: real servers (PostgreSQL, S3, a Hugging Face hub),
media files, test speech, served apps, a store that fails on purpose.

It lives beside ``bench`` and ``tools`` at the repository root, outside the runtime packages: the distribution's
packages are found under ``services/`` and ``cli/`` only, so no install (no image) carries it, and nothing under
``services/*/voice_*`` may import it (tests/test_service_dependencies.py). Development reaches it from the checkout:
pytest's root conftest.py puts the repository root on ``sys.path``, and ``python -m bench`` runs from there.
"""
