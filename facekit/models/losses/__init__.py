"""facekit.models.losses"""
