"""facekit.models"""
