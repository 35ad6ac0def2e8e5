// The Shardwise library: `import Shardwise` brings the engine, the model API, checkpoints,
// data sets, machine topology and kernels.
@_exported import ShardwiseData
@_exported import ShardwiseEngine
@_exported import ShardwiseIO
@_exported import ShardwiseKernels
@_exported import ShardwiseLayers
@_exported import ShardwiseTopology
