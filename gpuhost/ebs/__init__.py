"""EBS volume tuning (`gpuhost tune-ebs`): raise a gp3 volume's IOPS and throughput live, priced and
predicted, within AWS's limits and modification rule.

limits.py  the one data table: volume-type limits, the modification rule, per-region prices
volume.py  what the EC2 API says about a volume and its modifications
plan.py    validation, target, cost, unpack prediction and the modification gate (pure)
imds.py    IMDSv2 (instance id, region)
aws.py     the EC2 calls and AWS errors as one-line messages
target.py  which volume: --volume-id, the root volume or the one under Docker's data-root
wait.py    following a modification until optimizing/completed
tune.py    all of it in order, for the CLI and the agent
"""
