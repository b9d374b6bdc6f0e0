"""facekit.engine"""
