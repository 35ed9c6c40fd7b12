"""Telling the world when a source's state changes: one base class (``base.Publisher``) and a
publisher per way out (``mqtt`` with Home Assistant discovery, ``webhook``)."""
