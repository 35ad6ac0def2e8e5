import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

/// The optimizer, schedule, batch and seed flags shared by `train` and `sweep`.
struct TrainingOptions: ParsableArguments {
    @Option(help: "Base learning rate (default: a model file's recipe, else 0.05 for sgd, and PyTorch's defaults for adam and adamw, 1e-3, and rmsprop, 1e-2).")
    var lr: Double?

    @Option(help: "Learning-rate schedule: constant, step, exponential or cosine (default: cosine for the reference perceptron; with --model, the file's recipe or constant).")
    var schedule: String?

    @Option(help: "For --schedule step: epochs between decays.")
    var lrStep = 10

    @Option(help: "For --schedule step or exponential: the decay factor.")
    var lrGamma = 0.5

    @Option(help: "For --schedule cosine: the final rate as a fraction of the base rate (default 0.01).")
    var lrFloor: Double?

    @Option(help: "The optimizer: sgd (momentum SGD), adam, adamw or rmsprop, each as PyTorch's torch.optim class (default: a model file's recipe, else sgd).")
    var optimizer: OptimizerAlgorithm?

    @Option(help: "Adam and AdamW: β₁, the first moment's decay.")
    var beta1 = 0.9

    @Option(help: "Adam and AdamW: β₂, the second moment's decay (default 0.999).")
    var beta2: Double?

    @Option(help: "RMSprop: α, the smoothing constant of the mean square.")
    var alpha = 0.99

    @Option(help: "Adam, AdamW and RMSprop: ε, added to the denominator outside the square root.")
    var eps = 1e-8

    @Option(help: "Clip the summed gradient to this global L2 norm before each update (PyTorch's clip_grad_norm_). Under mpirun it turns off --no-overlap's alternative: the exchange is not overlapped.")
    var clipNorm: Double?

    @Option(help: "Momentum coefficient, reached at the end of the ramp, if any (default 0.9 for sgd; rmsprop's momentum, default 0; unused by adam and adamw).")
    var momentum: Double?

    @Option(help: "Momentum at the start of the ramp (default: --momentum, no ramp).")
    var momentumStart: Double?

    @Option(help: "Epochs over which momentum ramps linearly from --momentum-start to --momentum (0: no ramp).")
    var momentumRamp = 0.0

    @Flag(help: "Nesterov momentum.")
    var nesterov = false

    @Option(help: "Weight decay: L2, added to the gradient (sgd, adam, rmsprop; default 0), or decoupled (adamw; default 0.01), as in PyTorch.")
    var weightDecay: Double?

    @Option(help: "Max-norm bound on each hidden unit's incoming weight vector (default: 3.5 for the reference perceptron; with --model, the file's recipe or none).")
    var maxNorm: Double?

    @Flag(help: "No max-norm constraint.")
    var noMaxNorm = false

    @Option(help: "Passes over the training set (default: a model file's recipe, else 80).")
    var epochs: Int?

    @Option(help: "Training steps in all, instead of --epochs: epochs of --steps-per-epoch steps (default: one epoch of N), evaluated after each.")
    var steps: Int?

    @Option(help: "Samples per optimisation step (the global batch): a whole number of shards (default: a model file's recipe, else 128).")
    var batchSize: Int?

    @Option(help: "Samples per shard, the unit of work and of determinism.")
    var shardSize = 64

    @Option(help: "Random seed: initialisation, shuffling and dropout masks all derive from it.")
    var seed: UInt64 = 1

    @Option(help: "Hold out N training samples for validation (the same ones for a seed, whatever the worker count).")
    var validation: Int?

    @Option(help: "Stop when the validation error has not improved for this many evaluations (epochs, unless --evaluate-every); the best epoch's checkpoint is kept in OUT/best.")
    var earlyStopping: Int?

    @Option(help: "Evaluate the test and validation sets after every N epochs (and after the last); default every epoch.")
    var evaluateEvery: Int?

    @Option(help: "Which tensors weight decay applies to: all, or matrices (the layers' weight matrices, not biases, normalizations or embeddings, as GPT-2 and nanoGPT).")
    var decayOn: String?

    @Option(help: "Ramp the learning rate up linearly over the first N steps (update t at (t + 1) / (N + 1) of the scheduled rate).")
    var warmupSteps: Int?

    @Option(help: "Steps an epoch takes, each over the first samples of its own shuffled order (a language model's windows, far more than a run trains on); default a whole pass.")
    var stepsPerEpoch: Int?


    /// The run's configuration: each setting from its flag, else from the model file's recipe
    /// (`modelFile`'s `training:`), else the default — the reference recipe's for the perceptron,
    /// neutral ones (a constant rate, no max-norm) for a model file, as a PyTorch user expects.
    func configuration(network: NetworkConfiguration, modelFile: String? = nil) throws -> RunConfiguration {
        let recipe = try modelFile.map(ModelFile.recipe) ?? ModelFile.Recipe()
        let described = network.layers != nil
        let optimizer = self.optimizer ?? recipe.optimizer ?? .sgd
        let lr = self.lr ?? recipe.learningRate ?? [.sgd: 0.05, .adam: 1e-3, .adamw: 1e-3, .rmsprop: 1e-2][optimizer]!
        var epochs = self.epochs ?? recipe.epochs ?? 80
        let batchSize = self.batchSize ?? recipe.batchSize ?? 128
        var perEpoch = stepsPerEpoch ?? recipe.stepsPerEpoch
        if let steps {
            guard self.epochs == nil else { throw ValidationError("--steps: give --steps or --epochs, not both") }
            guard steps > 0 else { throw ValidationError("--steps: \(steps), expected a positive number of steps") }
            let k = perEpoch ?? steps
            guard steps % k == 0 else { throw ValidationError("--steps: \(steps) is not a whole number of epochs of \(k) steps (--steps-per-epoch)") }
            (epochs, perEpoch) = (steps / k, k)
        }
        let lrFloor = self.lrFloor ?? recipe.lrFloor ?? 0.01
        let maxNorm: Double?
        if noMaxNorm {
            maxNorm = nil
        } else if let bound = self.maxNorm {
            maxNorm = bound
        } else if let fromRecipe = recipe.maxNorm {
            maxNorm = fromRecipe  // nil: `max_norm: none`
        } else {
            maxNorm = described ? nil : 3.5
        }
        let weightDecay = self.weightDecay ?? recipe.weightDecay
        let clipNorm = self.clipNorm ?? recipe.clipNorm
        let schedule: LearningRateSchedule
        switch self.schedule ?? recipe.schedule ?? (described ? "constant" : "cosine") {
        case "constant": schedule = .constant
        case "step": schedule = .step(every: lrStep, gamma: lrGamma)
        case "exponential": schedule = .exponential(gamma: lrGamma)
        case "cosine": schedule = .cosine(epochs: epochs, floor: lrFloor)
        default:
            throw ValidationError("--schedule: unknown schedule '\(self.schedule ?? "")', expected constant, step, exponential or cosine")
        }
        let momentum = self.momentum ?? (optimizer == .sgd ? 0.9 : 0)
        if optimizer == .adam || optimizer == .adamw, self.momentum != nil || momentumStart != nil {
            throw ValidationError("--momentum: \(optimizer.rawValue) has no momentum coefficient (its moments are --beta1 and --beta2)")
        }
        // RMSprop keeps α where Adam keeps β₂: checked here so the error names the flag given.
        if optimizer == .rmsprop, !(alpha >= 0 && Float(alpha) < 1) {
            throw ValidationError("--alpha: \(alpha), expected a value in [0, 1) (below 1 as a Float)")
        }
        var settings = OptimizerConfiguration(
            learningRate: lr, schedule: schedule,
            momentum: MomentumRamp(start: momentumStart ?? momentum, end: momentum, epochs: momentumRamp),
            nesterov: nesterov, weightDecay: weightDecay ?? (optimizer == .adamw ? 0.01 : 0), maxNorm: maxNorm)
        settings.algorithm = optimizer
        (settings.beta1, settings.beta2) = (beta1, optimizer == .rmsprop ? alpha : beta2 ?? recipe.beta2 ?? 0.999)
        settings.epsilon = eps
        settings.clipNorm = clipNorm
        settings.warmupSteps = warmupSteps ?? recipe.warmupSteps
        switch decayOn ?? recipe.decayOn ?? "all" {
        case "all": break
        case "matrices": settings.decayMatricesOnly = true
        case let other: throw ValidationError("--decay-on: '\(other)', expected all or matrices")
        }
        var training = TrainingConfiguration(
            optimizer: settings,
            epochs: epochs, batchSize: batchSize, shardSize: shardSize, seed: seed,
            validationSamples: validation, earlyStoppingPatience: earlyStopping, evaluateEvery: evaluateEvery)
        training.stepsPerEpoch = perEpoch
        return RunConfiguration(network: network, training: training)
    }

}

extension OptimizerAlgorithm: ExpressibleByArgument {}

/// Where a run's data comes from and which workers run it: shared by `train` and `sweep`.
struct MachineOptions: ParsableArguments {
    @Option(help: "Worker threads, one pinned per core (default: one per core of this machine).")
    var workers: Int?

    @Option(help: "Worker placement: compact or spread.")
    var policy: PlacementPolicy = .compact

    @Flag(help: "Place workers on SMT siblings too.")
    var smt = false

    @Flag(help: "Allow more workers than processing units (or, under MPI, more ranks on a host than its cores).")
    var oversubscribe = false

    @Flag(help: "Use only the cores of this process's CPU binding (taskset, numactl --physcpubind, mpirun --bind-to), not every core its cgroup allows.")
    var affinity = false

    @Flag(help: "Under mpirun: combine the ranks' gradients with a plain MPI_Allreduce. Less data moved, but the weights then depend on the rank count (not bit-reproducible).")
    var fastAllreduce = false

    @Flag(help: "Under mpirun: compute every shard, then exchange, then reduce (the same weights, slower). By default each layer's gradients are sent as soon as the backward pass produced them, and reduced and gathered layer by layer.")
    var noOverlap = false

    @Option(help: "Under mpirun, ordered: auto, scatter (each shard's slice to the rank that updates it) or chain (one partial sum a rank, passed along the ranks). The same weights; auto moves the fewest bytes through the busiest rank.")
    var exchange: ExchangePattern = .auto

    @Option(help: "Under mpirun: seconds to wait for the other ranks in any one exchange before ending the job.")
    var mpiTimeout = 120.0

    @Option(help: "Matrix kernels: portable (Shardwise's own, the default: the same weights on any CPU; SHARDWISE_KERNEL_ISA=scalar|avx2|avx512 forces an instruction set) or blas (the BLAS library; its bits depend on the CPU type). A resumed run keeps its checkpoint's.")
    var kernels: MatrixKernels = .portable

    @Option(help: "The training data: a folder with the four MNIST IDX files (default: data/mnist, then ../shared/datasets/mnist), or a file: CSV, NPZ, safetensors, or FEATURES.npy,LABELS.npy.")
    var data: String?

    @OptionGroup var dataFlags: DataFlags

    @Option(help: "Use only the first N test samples.")
    var testSamples: Int?

    func validate() throws {
        try requirePaths(["--data": data])
        if let workers, workers <= 0 {
            throw ValidationError("--workers: \(workers), expected at least 1")
        }
        if let testSamples, testSamples <= 0 {
            throw ValidationError("--test-samples: \(testSamples), expected a positive count")
        }
        if !(mpiTimeout > 0 && mpiTimeout <= 86_400) {
            throw ValidationError("--mpi-timeout: \(mpiTimeout), expected a positive number of seconds up to 86400 (a job whose ranks stop answering must end)")
        }
    }

    func runOptions(outDirectory: String?) -> RunOptions {
        var options = RunOptions(dataDirectory: data, outDirectory: outDirectory, workers: workers, testLimit: testSamples)
        dataFlags.apply(to: &options.data)
        options.policy = policy
        options.smt = smt
        options.oversubscribe = oversubscribe
        options.affinity = affinity
        options.fastAllreduce = fastAllreduce
        options.overlap = !noOverlap
        options.exchange = exchange
        options.mpiTimeout = mpiTimeout
        options.kernels = kernels
        return options
    }
}
