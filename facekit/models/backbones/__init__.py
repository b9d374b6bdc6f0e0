"""facekit.models.backbones"""
