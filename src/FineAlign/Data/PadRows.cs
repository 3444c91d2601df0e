namespace FineAlign.Data;

/// <summary>
/// Lays variable-length rows into one flat [rows × width] array (row-major), right-aligned after padding (the
/// default: training batches) or left-aligned before it (generation prompts, so every row's next token sits in the
/// last column). The one padding loop of the library: collators, rollouts, reward inputs and the sampler use it.
/// </summary>
public static class PadRows
{
    /// <summary>The rows padded with <paramref name="fill"/> to <paramref name="width"/> (at least the longest row).</summary>
    public static T[] Rows<T>(IReadOnlyList<IReadOnlyList<T>> rows, int width, T fill, bool left = false)
    {
        var flat = new T[rows.Count * width];
        if (!EqualityComparer<T>.Default.Equals(fill, default)) Array.Fill(flat, fill);
        for (int i = 0; i < rows.Count; i++)
        {
            var row = rows[i];
            if (row.Count > width) throw new ArgumentException($"row {i} has {row.Count} entries, more than the width {width}");
            int off = i * width + (left ? width - row.Count : 0);
            for (int j = 0; j < row.Count; j++) flat[off + j] = row[j];
        }
        return flat;
    }

    /// <summary>1 where a row of <paramref name="lengths"/>[i] entries has an entry, 0 on padding, [rows × width].</summary>
    public static T[] Mask<T>(IReadOnlyList<int> lengths, int width, T one, bool left = false)
    {
        var flat = new T[lengths.Count * width];
        for (int i = 0; i < lengths.Count; i++)
        {
            int off = i * width + (left ? width - lengths[i] : 0);
            for (int j = 0; j < lengths[i]; j++) flat[off + j] = one;
        }
        return flat;
    }

    /// <summary>Each row of <paramref name="firsts"/> followed by the same row of <paramref name="seconds"/> (prompt + response), unpadded.</summary>
    public static IReadOnlyList<T[]> Concat<T>(IReadOnlyList<T[]> firsts, IReadOnlyList<T[]> seconds) =>
        firsts.Select((f, i) => f.Concat(seconds[i]).ToArray()).ToList();
}
