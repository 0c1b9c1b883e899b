"""simplesafe.report"""
