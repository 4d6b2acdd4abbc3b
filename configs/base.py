"""Every config section with its defaults; experiment configs import this and override.

Run with its defaults (one dense MLP trained on MNIST-1D):

    python main.py --config configs/base.py --workdir runs/base
"""
from ml_collections import config_dict


def get_config():
    c = config_dict.ConfigDict()
    c.experiment = "train"
    c.seed = 0

    c.data = config_dict.ConfigDict()
    c.data.name = "mnist1d"          # mnist1d | fashion_mnist | mnist | cifar10 | cifar100 | tfds:NAME
    c.data.data_dir = ""             # IDX folder or tfds data_dir; "" = the source's default
    c.data.validation_size = 500     # held out of train; the early-stopping split
    c.data.source = config_dict.ConfigDict()  # source options; None = the source's default
    c.data.source.num_train = config_dict.placeholder(int)    # keep the first n training examples
    c.data.source.num_test = config_dict.placeholder(int)     # keep the first n test examples
    c.data.source.num_samples = config_dict.placeholder(int)  # mnist1d: examples generated (default 5000)
    c.data.source.data_seed = config_dict.placeholder(int)    # mnist1d: the generator's seed (default 42)
    c.data.source.train_split = config_dict.placeholder(object)  # mnist1d: share for train (0.8); tfds: split name
    c.data.source.test_split = config_dict.placeholder(str)   # tfds: split name (default "test")

    c.model = config_dict.ConfigDict()
    c.model.name = "mlp"
    c.model.widths = (100, 100)

    c.optimizer = config_dict.ConfigDict()
    c.optimizer.name = "adam"        # sgd | momentum | nesterov | adam | adamw
    c.optimizer.learning_rate = 1e-3
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "constant"  # constant | step | cosine
    c.optimizer.warmup_steps = 0
    c.optimizer.boundaries = ()        # steps, for schedule = "step"
    c.optimizer.decay = 0.1

    c.train = config_dict.ConfigDict()
    c.train.steps = 3000
    c.train.batch_size = 100
    c.train.eval_every = 250
    c.train.checkpoint_every = 500   # must be a multiple of eval_every to take effect
    c.train.eval_batch_size = 1000   # examples per evaluation batch; 0 = from the device's free memory (1000 where unknown)
    c.train.log_activations = False  # dead-neuron rates (dynamic, static) at every evaluation, on the val set
    c.train.device_data = True       # keep the train set on the device, batches gathered in the compiled loop
    c.train.compute_dtype = "float32"  # or "bfloat16": matmuls and convolutions in bfloat16 (mixed precision)
    c.train.member_block = "auto"    # how stacked members train: "auto" | "vmap" (all at every step) | B (B at a time)

    c.mask = config_dict.ConfigDict()
    c.mask.path = ""                 # a mask.npz to train a pruned network

    c.parallel = config_dict.ConfigDict()
    c.parallel.data_parallel = True  # shard batches over all local devices
    c.parallel.distributed = False   # jax.distributed.initialize() for multi-host runs
    c.parallel.heartbeat_timeout = 100  # seconds without heartbeats after which a lost process stops the run

    c.lottery = config_dict.ConfigDict()  # experiment = "lottery"
    c.lottery.levels = 5             # pruning rounds after the dense level 0
    c.lottery.fraction = 0.2         # share of the remaining prunable weights removed per level
    c.lottery.scope = "global"       # global (one |w| threshold across layers) | layerwise
    c.lottery.granularity = "weights"  # weights | units (structured IMP: each hidden layer loses `fraction` of its units)
    c.lottery.layer_fractions = config_dict.ConfigDict()  # per-leaf rates, e.g. {"output/kernel": 0.1}; 0 = not pruned
    c.lottery.rewind_step = 0        # 0 = reset to initialisation; k = rewind to step k of the dense run
    c.lottery.seeds = 1              # replicates, trained side by side
    c.lottery.controls = ("reinit", "random_prune")  # also "shuffle": the ticket's mask shuffled in each layer
    c.lottery.ap_fraction = 0.0      # share of each level's budget removed by AP (Liu et al. 2022) instead of magnitude
    c.lottery.instability_levels = ()  # levels whose rewind point gets the instability analysis
    c.lottery.instability_points = 11  # points on the line between the two copies
    c.lottery.keep_members = False   # write every member's trained weights (levels/L/final.npz; controls, batch stats)
    c.lottery.robustness = False     # at the end: the robustness lottery (lth_jax.robustness); keeps the members
    c.lottery.robustness_severities = (1, 3, 5)
    c.lottery.robustness_corruptions = ()  # names (lth_jax.data.corruptions); () = every one that fits the inputs
    c.lottery.robustness_examples = 2000   # test examples evaluated under each corruption
    # lottery tickets on a data diet (Paul et al. 2022): the dense pre-training up to
    # rewind_step uses the examples a scores.npz (from the diet experiment) selects
    c.lottery.pretrain_scores = ""   # path to a diet run's scores/scores.npz; "" = pre-train on all examples
    c.lottery.pretrain_score = "el2n"
    c.lottery.pretrain_selection = "easiest"  # hardest | easiest | window | random
    c.lottery.pretrain_fraction = 0.1

    c.unit_search = config_dict.ConfigDict()  # experiment = "unit_search"
    c.unit_search.sparsities = (0.5, 0.75, 0.9)  # node sparsities: share of hidden units removed
    c.unit_search.candidates = 32    # N random unit masks per sparsity and replicate, trained as one program
    c.unit_search.keep = 4           # B: the searched set (lowest criterion) and the random set
    c.unit_search.criterion_step = 100  # the criterion: validation loss at this step (0 = at initialisation)
    c.unit_search.scope = "layerwise"   # layerwise (every layer loses the share) | global (with min_units)
    c.unit_search.min_units = 1      # with scope global: units every hidden layer keeps at least
    c.unit_search.seeds = 2          # replicates (parent initialisations)

    c.prune_at_init = config_dict.ConfigDict()  # experiment = "prune_at_init"
    c.prune_at_init.methods = ("snip", "grasp", "synflow", "magnitude", "random")
    c.prune_at_init.densities = (0.2, 0.05, 0.01)  # shares of the prunable weights (kernels) kept
    c.prune_at_init.distribution = "global"  # global (one budget, by score) | uniform | erk
    c.prune_at_init.controls = ("shuffle", "reinit")  # Frankle et al. 2021's sanity checks
    c.prune_at_init.batches = 1      # training batches SNIP and GraSP score
    c.prune_at_init.synflow_rounds = 100
    c.prune_at_init.seeds = 2
    c.prune_at_init.lottery_workdir = ""  # a finished lottery run of the same data and model, drawn alongside

    c.measures = config_dict.ConfigDict()  # experiment = "measures"
    c.measures.widths = ()           # MLP hidden widths per architecture, e.g. ((100,), (100, 100)); or:
    c.measures.models = ()           # model names per architecture; both empty = the config's model
    c.measures.learning_rates = (1e-3, 3e-3)
    c.measures.weight_decays = (0.0, 1e-4)
    c.measures.seeds = 2
    c.measures.label_noise = (0.0,)  # add shares > 0 for Gastpar et al.'s check (the same grid on noisy labels)
    c.measures.stop_loss = 0.01      # a member stops when its training cross-entropy reaches this
    c.measures.lottery_levels = 0    # IMP rounds after the dense grid (lottery.fraction, lottery.scope; rewound to init)
    c.measures.diet_fractions = ()   # kept shares of the training set besides all of it, e.g. (0.5, 0.25)
    c.measures.diet_selection = "random"  # or SCORE:METHOD (e.g. el2n:hardest) with measures.diet_scores
    c.measures.diet_scores = ""      # a diet run's scores/scores.npz
    c.measures.samples = 10          # Monte Carlo draws per sigma of the sharpness bisection

    c.diet = config_dict.ConfigDict()  # experiment = "diet"
    c.diet.members = 4               # K: the scoring ensemble (the paper recommends >= 10)
    c.diet.score_epochs = 2.0        # train the ensemble this long before scoring; 0 = at initialisation
    c.diet.scores = ("el2n", "grand", "input_norm", "forgetting")  # also grand_init: GraNd of the members at init
    c.diet.chunk_size = 1000         # examples scored at a time (memory bound); 0 = from the device's free memory
    c.diet.selections = ("el2n:hardest", "el2n:easiest", "random")  # SCORE:hardest|easiest|window, or random
    c.diet.window_offset = 0.0       # for :window, the share of hardest examples skipped first
    c.diet.class_balanced = False
    c.diet.fractions = (0.3, 0.5, 0.7)  # kept fractions; each trains train.steps steps
    c.diet.full_data = True          # also train on all examples (fraction 1.0)
    c.diet.seeds = 2
    c.diet.label_noise = 0.0         # share of training labels flipped before scoring
    c.diet.scores_path = ""          # reuse a scores.npz instead of scoring
    return c
