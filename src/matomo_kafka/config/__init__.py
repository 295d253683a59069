"""Settings from parm/wa7_conf.ini, parm/wa7.env and the environment, validated; the Kafka
client properties derived from them."""
