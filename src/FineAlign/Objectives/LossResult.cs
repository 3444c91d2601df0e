using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>What a training step returns: the (mean) loss to backpropagate, extra scalar metrics
/// to log (averaged over micro-batches), and the number of tokens processed (for tokens/s).</summary>
public sealed record LossResult(Tensor Loss, IReadOnlyDictionary<string, double>? Metrics = null, long Tokens = 0);
