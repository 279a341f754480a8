/* command_list.h - the table of subcommands (name, function, one-line help).
 * Add a line here and a src/cli/cmd_<name>.c to add a command. No include guard: included with different COMMAND macros. */
COMMAND("version", cmd_version, "print the version and build")
COMMAND("info", cmd_info, "parameters, FLOPs per token and the FlowHN split for a config")
COMMAND("init", cmd_init, "write a freshly initialised model from a config as a checkpoint")
COMMAND("export", cmd_export, "export checkpoint weights to safetensors + config.json")
COMMAND("tokenizer", cmd_tokenizer, "train, encode, decode or benchmark a byte-level BPE tokenizer")
COMMAND("generate", cmd_generate, "generate text from a checkpoint (KV cache + SSM state)")
COMMAND("eval", cmd_eval, "zero-shot multiple choice and LAMBADA scores of a checkpoint")
COMMAND("train", cmd_train, "train a model on token shards (CPU), with checkpoints, log and loss plot")
COMMAND("prepare", cmd_prepare, "turn text or JSON-lines files into llm.c token shards")
COMMAND("bench", cmd_bench, "measure training tokens/s, MFU and memory for a config")
