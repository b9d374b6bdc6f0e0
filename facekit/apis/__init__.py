"""facekit.apis"""
