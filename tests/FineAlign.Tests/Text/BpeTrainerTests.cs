using FineAlign.Data.Corpus;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Text;

public class BpeTrainerTests
{
    [Fact]
    public void TrainedTokenizerLoadsThroughTheProjectLoaderAndRoundTripsEveryCorpusText()
    {
        using var dir = TestPaths.NewTempDir();
        var reviews = ReviewCorpus.Generate(1234, 300);
        var model = new BpeTrainer(600).Train(reviews.Select(r => r.Text));
        Assert.Equal(600, model.VocabSize);
        Assert.Equal(600 - 5 - 256, model.Merges.Count);
        BpeTrainer.Save(model, dir.Path);

        var tok = TokenizerLoader.Load(dir.Path);
        Assert.IsType<HfTokenizer>(tok);
        Assert.Equal(600, tok.VocabSize);
        Assert.Equal(0, tok.BosId);
        Assert.Equal(1, tok.EosId);
        Assert.Equal(2, tok.PadId);
        Assert.True(tok.AddBos);
        long bytes = 0, ids = 0;
        foreach (var r in ReviewCorpus.Generate(99, 200).Concat(reviews))   // unseen texts too
        {
            var enc = tok.Encode(r.Text);
            Assert.Equal(r.Text, tok.Decode(enc));
            Assert.All(enc, id => Assert.InRange(id, 5, 599));              // no special token from plain text
            bytes += System.Text.Encoding.UTF8.GetByteCount(r.Text);
            ids += enc.Length;
        }
        Assert.True(ids * 3 < bytes, $"{ids} tokens for {bytes} bytes: merges do not compress");
        // Characters never seen in training still round-trip (every byte is in the vocabulary).
        Assert.Equal("naïve 😀 ok", tok.Decode(tok.Encode("naïve 😀 ok")));
        // A special token written in text is one id; BOS/EOS are dropped when decoding.
        Assert.Equal([1], tok.Encode("<|eos|>"));
    }

    [Fact]
    public void MostFrequentPairIsMergedFirstAndTiesGoToTheSmallestPair()
    {
        // "ab" ×3 and "cd" ×3 tie; a < c, so (a, b) first; then (c, d); "xy" (×1) is below the minimum frequency.
        var model = new BpeTrainer(5 + 256 + 10).Train(["ab ab ab", "cd cd cd", "xy"]);
        // Pieces "ab", "Ġab" ×2, "cd", "Ġcd" ×2, "xy": (a,b) and (c,d) tie at 3 → (a,b) first (a < c); then the
        // "Ġ"+word pairs (2 each, ab's id < cd's id); (x,y) occurs once and stops the training early.
        Assert.Equal([("a", "b"), ("c", "d"), ("Ġ", "ab"), ("Ġ", "cd")], model.Merges);
        Assert.Equal(5 + 256 + 4, model.VocabSize);
    }

    [Fact]
    public void SameTextsGiveIdenticalFiles()
    {
        using var a = TestPaths.NewTempDir();
        using var b = TestPaths.NewTempDir();
        var texts = ReviewCorpus.Generate(7, 100).Select(r => r.Text).ToList();
        BpeTrainer.Save(new BpeTrainer(400).Train(texts), a.Path);
        BpeTrainer.Save(new BpeTrainer(400).Train(texts), b.Path);
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(a.Path, f)), File.ReadAllBytes(Path.Combine(b.Path, f)));
    }

    [Fact]
    public void TooSmallAVocabularyIsRefused() =>
        Assert.Contains("too small", Assert.Throws<FineAlignException>(() => new BpeTrainer(100)).Message);
}
