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

    private static long s_nextId;

    /// <summary>
    /// One id per cache. Its keys and values were computed from the model's weights, so the weights are fixed for as long
    /// as the cache is in (valid) use: weight copies the decode path makes (<see cref="TransposedWeight"/>) are keyed on it.
    /// </summary>
    internal long Id { get; } = Interlocked.Increment(ref s_nextId);

    /// <summary>
    /// Whether decode steps through this cache may use the decode layout (<see cref="TransposedWeight"/>: Wᵀ copies, made
    /// once per cache). Generation turns it off for calls too short to pay the copies back (docs/DECODING.md).
    /// </summary>
    public bool DecodeLayout { get; set; } = true;

    /// <summary>Forward passes through this cache so far (the prefill is the first).</summary>
    public int Passes { get; private set; }

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
        // Written in place (narrow + copy_: two calls, no index tensors), returned as views.
        _keys[layer]!.narrow(2, Length, n).copy_(keys);
        _values[layer]!.narrow(2, Length, n).copy_(values);
        return (_keys[layer]!.narrow(2, 0, Length + n), _values[layer]!.narrow(2, 0, Length + n));
    }

    /// <summary>Marks <paramref name="tokens"/> new tokens as stored (called by the model after a forward pass).</summary>
    public void Advance(int tokens)
    {
        Length += tokens;
        Passes++;
        if (_pendingPositions is not null)
        {
            NextPositions?.Dispose();
            NextPositions = _pendingPositions;
            _pendingPositions = null;
        }
        else if (NextPositions is not null)
        {
            if (tokens == 1) NextPositions.add_(LiveScalars.One);
            else { using var n = tokens.ToScalar(); NextPositions.add_(n); }
        }
    }

    /// <summary>
    /// Each row's position for its next token, [batch, 1] (int64), once a forward pass has gone through this cache:
    /// a one-token step without a mask continues from here (see <see cref="AttentionPlan.Create"/>), so generation
    /// neither rebuilds the mask nor recomputes positions every step.
    /// </summary>
    internal Tensor? NextPositions { get; private set; }

    /// <summary>Additive attention bias over the cached columns, [batch, 1, 1, Capacity]: 0 for real tokens, a large negative for padding; null while no padding was seen.</summary>
    internal Tensor? KeyBias { get; private set; }

    private Tensor? _pendingPositions;

    /// <summary>Called while planning a pass: the positions after it (installed by <see cref="Advance"/>).</summary>
    internal void SetNextPositions(Tensor next)
    {
        _pendingPositions?.Dispose();
        _pendingPositions = next.DetachFromDisposeScope();
    }

    /// <summary>Records padding of columns [0, keep.shape[1]) from a 0/1 mask [batch, columns] (allocates the bias on first padding).</summary>
    internal void RecordPadding(Tensor keep, ScalarType dtype, Tensor negative)
    {
        long b = keep.shape[0], s = keep.shape[1];
        if (KeyBias is null || KeyBias.dtype != dtype)
        {
            KeyBias?.Dispose();
            KeyBias = zeros(new[] { b, 1, 1, (long)Capacity }, dtype, keep.device).DetachFromDisposeScope();
        }
        using var _ = NewDisposeScope();
        KeyBias.narrow(3, 0, s).copy_(where(keep.ne(0), zeros(1, dtype, keep.device), negative).view(b, 1, 1, s));
    }

    public void Dispose()
    {
        foreach (var t in _keys) t?.Dispose();
        foreach (var t in _values) t?.Dispose();
        NextPositions?.Dispose();
        KeyBias?.Dispose();
        _pendingPositions?.Dispose();
    }
}
