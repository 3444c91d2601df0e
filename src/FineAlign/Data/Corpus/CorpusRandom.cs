using System.Numerics;

namespace FineAlign.Data.Corpus;

/// <summary>
/// Small seeded generator (xoshiro256** seeded by SplitMix64; Blackman &amp; Vigna 2018).
/// We do not use <see cref="System.Random"/>: its seeded sequence is deterministic today but is an
/// implementation detail that a future .NET may change; this one is fixed forever, so a seed names
/// the same corpus on every machine, runtime and culture.
/// </summary>
public sealed class CorpusRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public CorpusRandom(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    /// <summary>An independent stream for item <paramref name="index"/> of a corpus with <paramref name="seed"/>,
    /// so item i does not depend on how many items are generated.</summary>
    public static CorpusRandom ForItem(int seed, long index, ulong stream = 0)
    {
        ulong x = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ (ulong)index * 0xD1B54A32D192ED03UL ^ stream * 0x8CB92BA72F3D8DD7UL;
        return new CorpusRandom(SplitMix(ref x));
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = BitOperations.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = BitOperations.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, n).</summary>
    public int Next(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n));
        return (int)((NextUInt64() >> 32) * (ulong)n >> 32);
    }

    public bool Chance(double p) => NextDouble() < p;

    public T Pick<T>(IReadOnlyList<T> items) => items[Next(items.Count)];

    /// <summary>Approximately standard normal (Irwin–Hall sum of 4 uniforms, range ±3.46). Only + and *,
    /// so results are bit-identical on every platform (Math.Log/Cos may differ in the last bit across libms).</summary>
    public double NextGaussian()
    {
        double s = NextDouble() + NextDouble() + NextDouble() + NextDouble();
        return (s - 2.0) * 1.7320508075688772;
    }
}
