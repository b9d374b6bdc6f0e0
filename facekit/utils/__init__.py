"""facekit.utils"""
