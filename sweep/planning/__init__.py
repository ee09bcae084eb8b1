"""Cost planning: what a sweep spec will cost before it runs (plan), the packaged H100 rate
table (rates) and rates measured now on this device (calibrate)."""
