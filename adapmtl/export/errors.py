"""The error an export or an exported file raises."""
from adapmtl.errors import AdapMTLError


class ExportError(AdapMTLError, ValueError):
    """A model cannot be exported as asked, or an exported file is damaged or not what it claims."""
