namespace FineAlign.Training;

/// <summary>
/// A small seedable RNG whose whole state is one <see cref="ulong"/>, so it can be checkpointed
/// (System.Random's state cannot). SplitMix64 (Steele, Lea &amp; Flood 2014).
/// </summary>
public sealed class SplitMix64
{
    public SplitMix64(ulong seed) => State = seed;

    /// <summary>The full generator state; assigning it restores a saved generator.</summary>
    public ulong State { get; set; }

    public ulong NextUInt64()
    {
        ulong z = State += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform integer in [0, maxExclusive), without modulo bias (rejection sampling).</summary>
    public int NextInt(int maxExclusive)
    {
        if (maxExclusive <= 0) throw new ArgumentOutOfRangeException(nameof(maxExclusive));
        ulong n = (ulong)maxExclusive;
        ulong limit = ulong.MaxValue - ulong.MaxValue % n;
        ulong r;
        do r = NextUInt64(); while (r >= limit);
        return (int)(r % n);
    }

    /// <summary>Uniform double in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));
}

/// <summary>Where the data stream stands: the epoch and the next batch index within it.</summary>
public readonly record struct DataPosition(int Epoch, int BatchIndex)
{
    public DataPosition Next(int batchesPerEpoch)
        => BatchIndex + 1 < batchesPerEpoch ? this with { BatchIndex = BatchIndex + 1 } : new DataPosition(Epoch + 1, 0);
}

/// <summary>
/// Data order fixed by the seed: epoch e visits the examples in a Fisher-Yates permutation drawn
/// from SplitMix64(seed, e), so any (epoch, batch) can be rebuilt after a resume without replaying.
/// </summary>
public static class DataOrder
{
    public static int[] Permutation(int count, int seed, int epoch)
    {
        var rng = new SplitMix64(((ulong)(uint)seed << 32) ^ (uint)epoch ^ 0x5EED_0000_0000_0000UL);
        var p = new int[count];
        for (int i = 0; i < count; i++) p[i] = i;
        for (int i = count - 1; i > 0; i--)
        {
            int j = rng.NextInt(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }

    /// <summary>Batches per epoch; the last batch of an epoch may be smaller.</summary>
    public static int BatchesPerEpoch(int count, int batchSize) => (count + batchSize - 1) / batchSize;
}

/// <summary>
/// A dataset seen by the trainer only through example indices: <c>collate</c> turns a list of
/// example indices into one batch (e.g. the Data collator over tokenized examples). Batches are
/// built lazily inside the trainer's dispose scope, so their tensors are freed after the step.
/// </summary>
public sealed class BatchSource<TBatch>
{
    private readonly Func<IReadOnlyList<int>, TBatch> _collate;
    private int _cachedSeed, _cachedEpoch = -1;
    private int[] _cachedPermutation = Array.Empty<int>();

    public BatchSource(int exampleCount, Func<IReadOnlyList<int>, TBatch> collate)
    {
        if (exampleCount <= 0) throw new FineAlignException("the dataset is empty: nothing to train or evaluate on");
        ExampleCount = exampleCount;
        _collate = collate;
    }

    public int ExampleCount { get; }

    /// <summary>The example indices of one batch in seeded-shuffled order.</summary>
    public IReadOnlyList<int> Indices(int seed, DataPosition position, int batchSize)
    {
        if (_cachedEpoch != position.Epoch || _cachedSeed != seed)
        {
            _cachedPermutation = DataOrder.Permutation(ExampleCount, seed, position.Epoch);
            _cachedEpoch = position.Epoch;
            _cachedSeed = seed;
        }
        int start = position.BatchIndex * batchSize;
        if (start >= ExampleCount) throw new ArgumentOutOfRangeException(nameof(position), $"batch {position.BatchIndex} is past the end of the epoch");
        return new ArraySegment<int>(_cachedPermutation, start, Math.Min(batchSize, ExampleCount - start));
    }

    /// <summary>The shuffled batch at <paramref name="position"/>.</summary>
    public TBatch Batch(int seed, DataPosition position, int batchSize) => _collate(Indices(seed, position, batchSize));

    /// <summary>Number of batches when reading in file order (evaluation).</summary>
    public int InOrderBatchCount(int batchSize) => DataOrder.BatchesPerEpoch(ExampleCount, batchSize);

    /// <summary>Batch <paramref name="index"/> of the examples in file order, for evaluation.</summary>
    public TBatch InOrderBatch(int index, int batchSize)
    {
        int start = index * batchSize;
        if (start >= ExampleCount || index < 0) throw new ArgumentOutOfRangeException(nameof(index));
        return _collate(Enumerable.Range(start, Math.Min(batchSize, ExampleCount - start)).ToArray());
    }
}
