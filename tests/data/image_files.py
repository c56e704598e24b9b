"""Helpers shared by the decode tests (not a test file)."""
import os


def save(im, path, **kw):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    im.save(path, **kw)
    return path
