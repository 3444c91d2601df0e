using FineAlign.Text;
namespace FineAlign.Data;

/// <summary>
/// Concatenates examples into fixed-length blocks (as in GPT-style pretraining): an EOS separates
/// examples that do not already end with one, and each token keeps its loss-mask bit. Attention is
/// not reset at example boundaries (plain causal attention over the block). The first token of every
/// block has no context inside the block, so it is never a target.
/// </summary>
public static class Packing
{
    /// <param name="dropRemainder">Drop the last, shorter block (true) or keep it (false).</param>
    public static List<TokenizedExample> Pack(IEnumerable<TokenizedExample> examples, int blockSize, int eosId, bool dropRemainder = true)
    {
        if (blockSize < 2) throw new FineAlignException($"block size must be at least 2 (got {blockSize})");
        var blocks = new List<TokenizedExample>();
        var ids = new List<int>(blockSize);
        var mask = new List<bool>(blockSize);

        void Push(int id, bool target)
        {
            ids.Add(id);
            mask.Add(target);
            if (ids.Count == blockSize) Emit();
        }
        void Emit()
        {
            mask[0] = false;
            blocks.Add(new TokenizedExample(ids.ToArray(), mask.ToArray()));
            ids.Clear();
            mask.Clear();
        }

        foreach (var ex in examples)
        {
            for (int t = 0; t < ex.Length; t++) Push(ex.InputIds[t], ex.LossMask[t]);
            // The separator EOS is a target when the example's last token was (the model learns to stop).
            if (ex.Length > 0 && ex.InputIds[^1] != eosId) Push(eosId, ex.LossMask[^1]);
        }
        if (ids.Count > 1 && !dropRemainder) Emit();
        return blocks;
    }
}
