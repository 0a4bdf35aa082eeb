from django.utils import timezone


def utc_now_seconds():
    """Now, truncated to whole seconds: timestamps are served without microseconds."""
    return timezone.now().replace(microsecond=0)
