using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// Key/value cache for incremental decoding. Buffers are preallocated to <see cref="Capacity"/>
/// so each step writes a slice instead of concatenating (which would copy the whole history).
/// Layout per layer: [batch, kv heads, tokens, head dim].
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;

    public KvCache(int numLayers, int capacity)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity));
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
        Capacity = capacity;
    }

    public int Capacity { get; }

    /// <summary>Tokens already stored (before the forward pass that is in progress).</summary>
    public int Length { get; private set; }

    /// <summary>
    /// Stores this step's keys/values for <paramref name="layer"/> and returns views over all cached
    /// tokens including them. The model calls <see cref="Advance"/> once after its last layer.
    /// </summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor keys, Tensor values)
    {
        long n = keys.shape[2];
        if (Length + n > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} + {n} tokens exceed its capacity of {Capacity}.");
        if (_keys[layer] is null)
        {
            var shape = new[] { keys.shape[0], keys.shape[1], (long)Capacity, keys.shape[3] };
            _keys[layer] = zeros(shape, keys.dtype, keys.device).DetachFromDisposeScope();
            _values[layer] = zeros(shape, values.dtype, values.device).DetachFromDisposeScope();
        }
        var range = TensorIndex.Slice(Length, Length + n);
        _keys[layer]![TensorIndex.Colon, TensorIndex.Colon, range] = keys;
        _values[layer]![TensorIndex.Colon, TensorIndex.Colon, range] = values;
        var upTo = TensorIndex.Slice(0, Length + n);
        return (_keys[layer]![TensorIndex.Colon, TensorIndex.Colon, upTo], _values[layer]![TensorIndex.Colon, TensorIndex.Colon, upTo]);
    }

    /// <summary>Marks <paramref name="tokens"/> new tokens as stored (called by the model after a forward pass).</summary>
    public void Advance(int tokens) => Length += tokens;

    public void Dispose()
    {
        foreach (var t in _keys) t?.Dispose();
        foreach (var t in _values) t?.Dispose();
    }
}
