"""facekit.models.heads"""
