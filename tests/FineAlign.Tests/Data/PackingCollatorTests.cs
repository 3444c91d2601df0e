using System.Text;
using FineAlign.Data;
using FineAlign.Tests.Support;
using FineAlign.Text;
using TorchSharp;

namespace FineAlign.Tests.Data;

public class PackingCollatorTests
{
    private const int Eos = 9;

    private static readonly TokenizedExample[] Examples =
    [
        new([1, 2, 3], [false, true, true]),   // no EOS at the end → a separator EOS (target, like its last token)
        new([4, 5, Eos], [true, true, true]),  // ends with EOS → no separator
        new([6, 7], [false, false]),           // separator EOS not a target
    ];

    [Fact]
    public void Pack_ConcatenatesWithEosSeparators_KeepsMasksAligned()
    {
        // Stream: 1 2 3 9 | 4 5 9 6 | 7 9
        var blocks = Packing.Pack(Examples, blockSize: 4, eosId: Eos);
        Assert.Equal(2, blocks.Count);
        Assert.Equal([1, 2, 3, Eos], blocks[0].InputIds);
        Assert.Equal([false, true, true, true], blocks[0].LossMask);
        Assert.Equal([4, 5, Eos, 6], blocks[1].InputIds);
        Assert.Equal([false, true, true, false], blocks[1].LossMask);  // first token of a block: never a target

        var withRest = Packing.Pack(Examples, 4, Eos, dropRemainder: false);
        Assert.Equal(3, withRest.Count);
        Assert.Equal([7, Eos], withRest[2].InputIds);
        Assert.Equal([false, false], withRest[2].LossMask);
    }

    [Fact]
    public void Pack_RejectsTinyBlocks() =>
        Assert.Throws<FineAlignException>(() => Packing.Pack(Examples, 1, Eos));

    [Fact]
    public void Collate_RightPads_MasksPadding()
    {
        var batch = new[] { new TokenizedExample([1, 2, 3], [false, true, true]), new TokenizedExample([4, 5], [false, true]) };
        using var b = Collator.Collate(batch, padId: 0);
        Assert.Equal([2L, 3L], b.InputIds.shape);
        Assert.Equal(torch.ScalarType.Int64, b.InputIds.dtype);
        Assert.Equal(torch.ScalarType.Int64, b.AttentionMask.dtype);
        Assert.Equal(torch.ScalarType.Bool, b.LossMask.dtype);
        Assert.Equal([1L, 2, 3, 4, 5, 0], b.InputIds.data<long>().ToArray());
        Assert.Equal([1L, 1, 1, 1, 1, 0], b.AttentionMask.data<long>().ToArray());
        Assert.Equal([false, true, true, false, true, false], b.LossMask.data<bool>().ToArray());
        Assert.Equal((2L, 3L), (b.BatchSize, b.Length));
    }

    [Fact]
    public void Collate_PaddingIsNeverATargetEvenWithPadIdEqualToEos()
    {
        var batch = new[] { new TokenizedExample([7, Eos], [false, true]), new TokenizedExample([7], [false]) };
        using var b = Collator.Collate(batch, padId: Eos);
        Assert.Equal([7L, Eos, 7, Eos], b.InputIds.data<long>().ToArray());
        Assert.Equal([false, true, false, false], b.LossMask.data<bool>().ToArray());
        Assert.Equal([1L, 1, 1, 0], b.AttentionMask.data<long>().ToArray());
    }

    [Fact]
    public void Collate_RejectsEmptyAndMisalignedInput()
    {
        Assert.Throws<ArgumentException>(() => Collator.Collate([], 0));
        Assert.Throws<ArgumentException>(() => Collator.Collate([new TokenizedExample([1, 2], [false])], 0));
    }

    [Fact]
    public void PretrainCorpus_TextFile_DocumentsByBlankLines_PackedIntoBlocks()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Path.Combine(dir.Path, "c.txt");
        File.WriteAllText(p, "Once upon.\nA time.\n\n \n\nSecond story.\n", new UTF8Encoding(false));
        Assert.Equal(["Once upon.\nA time.", "Second story."], PretrainCorpus.ReadDocuments(p).ToArray());

        var tok = new ByteTokenizer();
        // [BOS] 18 bytes [EOS] + [BOS] 13 bytes [EOS] = 35 tokens → 4 blocks of 8, 3 left over.
        var blocks = PretrainCorpus.LoadBlocks(p, tok, contextLength: 8);
        Assert.Equal(4, blocks.Count);
        int[] stream = [256, .. Encoding.UTF8.GetBytes("Once upon.\nA time.").Select(b => (int)b), 257,
                        256, .. Encoding.UTF8.GetBytes("Second story.").Select(b => (int)b), 257];
        Assert.Equal(stream[..32], blocks.SelectMany(b => b.InputIds).ToArray());
        foreach (var b in blocks)
        {
            Assert.Equal(8, b.Length);
            Assert.False(b.LossMask[0]);
        }
        // A BOS inside a block is not a target; everything else after the block start is.
        Assert.Equal([false, true, true, true, true, true, true, true], blocks[1].LossMask);
        Assert.Equal(256, blocks[2].InputIds[4]);
        Assert.False(blocks[2].LossMask[4]);
        Assert.Throws<FineAlignException>(() => PretrainCorpus.LoadBlocks(p, tok, contextLength: 64));
    }

    [Fact]
    public void PretrainCorpus_InvalidUtf8Text_IsAClearError()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Path.Combine(dir.Path, "c.txt");
        File.WriteAllBytes(p, [.. "ok\n\nbad "u8, 0xC3, 0x28]);
        var e = Assert.Throws<FineAlignException>(() => PretrainCorpus.ReadDocuments(p).ToList());
        Assert.Contains("not valid UTF-8", e.Message);
        Assert.Contains(p, e.Message);
    }

    [Fact]
    public void PretrainCorpus_Jsonl_ReadsTextField()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Path.Combine(dir.Path, "c.jsonl");
        File.WriteAllText(p, "{\"text\": \"a\"}\n{\"text\": \"bc\"}\n{\"label\": 1}\n");
        var docs = PretrainCorpus.ReadDocuments(p).GetEnumerator();
        Assert.True(docs.MoveNext()); Assert.Equal("a", docs.Current);
        Assert.True(docs.MoveNext()); Assert.Equal("bc", docs.Current);
        var e = Assert.Throws<DataFormatException>(() => docs.MoveNext());
        Assert.Equal((3L, "text"), (e.Line, e.Field));
    }

    [Fact]
    public void PretrainCorpus_SharedTinyStories()
    {
        string p = TestPaths.RequireShared("data/tinystories/tinystories_val_subset.txt");
        var tok = new ByteTokenizer();
        var docs = PretrainCorpus.ReadDocuments(p).Take(50).ToList();
        Assert.Equal(50, docs.Count);
        Assert.All(docs, d => Assert.False(string.IsNullOrWhiteSpace(d)));
        var blocks = Packing.Pack(docs.Select(d => PretrainCorpus.EncodeDocument(tok, d)), 128, tok.EosId!.Value);
        Assert.NotEmpty(blocks);
        Assert.All(blocks, b => Assert.Equal(128, b.Length));
        Assert.Equal(docs[0], tok.Decode(blocks.SelectMany(b => b.InputIds)).Substring(0, docs[0].Length));
    }
}
