"""The bottom layer every segsync package may import: errors, time, emails.

Standard library only, and nothing of ours, so importing it can never create a cycle or pull a vendor SDK in.
"""
