using FineAlign.Data;

namespace FineAlign.Tests.Data;

public class PadRowsTests
{
    [Fact]
    public void RightAndLeftAlignedRowsAndTheirMasks()
    {
        IReadOnlyList<IReadOnlyList<long>> rows = [new long[] { 1, 2, 3 }, new long[] { 4 }];
        Assert.Equal(new long[] { 1, 2, 3, 4, 9, 9 }, PadRows.Rows(rows, 3, 9L));
        Assert.Equal(new long[] { 1, 2, 3, 9, 9, 4 }, PadRows.Rows(rows, 3, 9L, left: true));
        Assert.Equal(new long[] { 1, 1, 1, 0, 1, 0, 0, 0 }, PadRows.Mask([3, 1], 4, 1L));
        Assert.Equal(new[] { 0f, 1, 1, 0, 0, 1 }, PadRows.Mask([2, 1], 3, 1f, left: true));
        Assert.Throws<ArgumentException>(() => PadRows.Rows(rows, 2, 0L));
        Assert.Equal(new[] { 1, 2, 3 }, PadRows.Concat([new[] { 1 }], [new[] { 2, 3 }])[0]);
    }
}
