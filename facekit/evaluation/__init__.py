"""facekit.evaluation"""
