"""What tests share: a real daemon to drive, fakes, fixtures and system tools (one place)."""
