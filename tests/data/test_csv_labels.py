"""CSV labels: each kind of bad row is skipped and reported (on_bad='skip') or an error naming its
line and the fix (on_bad='raise'); what skipping cannot repair is always an error."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxcls.data.csv_labels import csv_items
from jaxcls.data.decode import SkippedImagesWarning
from jaxcls.data.imagedata import ImageClassifierData
from jaxcls.data.items import LayoutError


def write(root, text, name='labels.csv'):
    data = text if isinstance(text, bytes) else text.encode()
    with open(os.path.join(root, name), 'wb') as f:
        f.write(data)


@pytest.fixture
def imgs(tmp_path):
    os.makedirs(tmp_path / 'imgs')
    for i in range(8):
        (tmp_path / 'imgs' / f'{i}.jpg').write_bytes(b'x')
    return tmp_path


def both_ways(root, match, **kw):
    """The layout with on_bad='skip' (its one warning checked against `match`), after checking
    that on_bad='raise' refuses the same CSV with a message that matches too."""
    kw = {'suffix': '.jpg', **kw}
    with pytest.raises(LayoutError, match=match + r".*Fix them, or pass on_bad='skip'"):
        csv_items(str(root), 'imgs', 'labels.csv', on_bad='raise', **kw)
    with pytest.warns(SkippedImagesWarning, match=match) as rec:
        lay = csv_items(str(root), 'imgs', 'labels.csv', **kw)
    assert len(rec) == 1 and "on_bad='raise' makes this an error" in str(rec[0].message)
    return lay


def test_a_missing_file_is_skipped_and_named_by_its_line(imgs):
    write(imgs, 'id,label\n0,a\n1,b\n\n9,a\n2,a\n3,b\n')
    lay = both_ways(imgs, r'1 of the 5 rows .*labels.csv line 5: no file imgs/9.jpg; restore it, '
                          r'or remove the row', val_idxs=[0, 1])
    assert lay.skipped == [('imgs/9.jpg', 'labels.csv line 5: no file imgs/9.jpg; restore it, or '
                                          'remove the row')]
    assert lay.valid.fnames == ('imgs/0.jpg', 'imgs/1.jpg')     # val_idxs still count the row
    assert lay.train.fnames == ('imgs/2.jpg', 'imgs/3.jpg') and lay.train.y.tolist() == [0, 1]


def test_an_empty_label_cell_does_not_make_a_single_label_csv_multi_label(imgs):
    write(imgs, 'id,label\n0,a\n1,\n2,b\n3\n4,a\n5,b\n')
    lay = both_ways(imgs, r'2 of the 6 rows .*line 3: empty label cell; give the image its '
                          r'label\(s\), or remove the row; labels.csv line 5: empty label cell',
                    val_idxs=[0, 2])
    assert not lay.is_multi and lay.classes == ['a', 'b']
    assert [f for f, _ in lay.skipped] == ['imgs/1.jpg', 'imgs/3.jpg']
    assert lay.train.y.tolist() == [0, 1] and lay.valid.y.tolist() == [0, 1]


def test_duplicated_rows(imgs):
    # 1 repeated with the same label: the later row goes; 2 with two labels: both go
    write(imgs, 'id,label\n0,a\n1,b\n2,a\n1,b\n2,b\n3,a\n4,b\n')
    lay = both_ways(imgs, r'3 of the 7 rows .*line 5: repeats line 3 \(the same file and labels\); '
                          r'remove it', val_idxs=[0, 6])
    why = dict((r.split(':')[0], r) for _, r in lay.skipped)
    assert set(why) == {'labels.csv line 4', 'labels.csv line 5', 'labels.csv line 6'}
    assert "imgs/2.jpg is labelled differently on 2 lines (line 4: 'a'; line 6: 'b'); keep only " \
           "the row that is right" in why['labels.csv line 6']
    assert lay.train.fnames == ('imgs/1.jpg', 'imgs/3.jpg')
    assert set(lay.train.fnames).isdisjoint(lay.valid.fnames)


def test_a_label_only_in_validation_rows(imgs):
    write(imgs, 'id,tags\n0,a\n1,b c\n2,a b\n3,b\n4,a\n')
    lay = both_ways(imgs, r"line 3: label\(s\) \['c'\] appear only in validation rows, so the "
                          r"model cannot learn them; choose val_idxs that leave a row of each "
                          r"label in training, or remove the row", val_idxs=[0, 1])
    assert lay.is_multi and lay.classes == ['a', 'b']           # 'c' is not a class
    assert lay.valid.fnames == ('imgs/0.jpg',) and lay.valid.y.tolist() == [[1, 0]]


def test_a_non_utf8_byte_names_its_line_and_keeps_the_row_count(imgs):
    write(imgs, b'id,label\r\n0,a\r\n1,b\r\n2,caf\xe9\r\n3,a\r\n4,b\r\n')
    lay = both_ways(imgs, r'line 4: not UTF-8 \(byte 0xe9 at column 6\); save the CSV as UTF-8',
                    val_idxs=[3, 4])
    assert lay.skipped[0][0] == 'labels.csv line 4'
    assert lay.valid.fnames == ('imgs/3.jpg', 'imgs/4.jpg')     # row 2 still counted
    assert lay.classes == ['a', 'b']


def test_a_row_of_three_cells(imgs):
    write(imgs, 'id,label\n0,a\n1,b,extra\n2,b\n3,a\n')
    lay = both_ways(imgs, r'line 3: 3 cells, but a row is fname,labels; quote a cell that holds a '
                          r'comma', val_idxs=[0])
    assert lay.train.fnames == ('imgs/2.jpg', 'imgs/3.jpg')


def test_what_skipping_cannot_repair_is_an_error_whatever_on_bad(imgs):
    write(imgs, 'id,breed,extra\n0,a,x\n1,b,y\n')
    with pytest.raises(LayoutError, match=r"line 1: the header has 3 column\(s\) \['id', 'breed', "
                                          r"'extra'\]; from_csv reads two columns.*no column "
                                          r"arguments.*e.g. id,breed or image_name,tags"):
        csv_items(str(imgs), 'imgs', 'labels.csv', suffix='.jpg')
    write(imgs, 'id;label\n0;a\n1;b\n')
    with pytest.raises(LayoutError, match=r"header has 1 column\(s\) \['id;label'\] \(it looks "
                                          r"separated by ';'; from_csv reads comma-separated"):
        csv_items(str(imgs), 'imgs', 'labels.csv', suffix='.jpg')
    write(imgs, '0,a\n1,b\n2,a\n')
    with pytest.raises(LayoutError, match=r"line 1 \('0,a'\) names an existing image, .*imgs/0.jpg"
                                          r"'.*not a header. Pass skip_header=False"):
        csv_items(str(imgs), 'imgs', 'labels.csv', suffix='.jpg')
    assert csv_items(str(imgs), 'imgs', 'labels.csv', suffix='.jpg', skip_header=False,
                     val_idxs=[2]).train.fnames == ('imgs/0.jpg', 'imgs/1.jpg')
    write(imgs, 'id,label\n0,a\n1,b\n2,\n3,a\n')
    with warnings.catch_warnings():
        warnings.simplefilter('error')          # an error, not a warning and then an error
        with pytest.raises(LayoutError, match=r'no validation rows of .*labels.csv are left after '
                                              r'skipping the bad ones: labels.csv line 4: empty'):
            csv_items(str(imgs), 'imgs', 'labels.csv', suffix='.jpg', val_idxs=[2])


def test_from_csv_reports_bad_rows_and_bad_images_together(tmp_path):
    """One on_bad rule for the CSV's rows and the images they name: data.skipped lists both,
    and every row is either decoded or skipped."""
    os.makedirs(tmp_path / 'imgs')
    for i in range(6):
        Image.new('RGB', (12, 10), (200, 0, 0) if i % 2 else (0, 0, 200)).save(tmp_path / 'imgs' / f'{i}.png')
    (tmp_path / 'imgs' / '6.png').write_bytes(b'not a png')
    write(tmp_path, 'id,label\n' + ''.join(f'{i},{"red" if i % 2 else "blue"}\n' for i in range(7))
          + '9,red\n3,red\n')
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        data = ImageClassifierData.from_csv(str(tmp_path), 'imgs', 'labels.csv', bs=2,
                                            suffix='.png', val_idxs=[0, 1], cache_size=8,
                                            quiet=True)
    said = [str(w.message) for w in rec if issubclass(w.category, SkippedImagesWarning)]
    assert len(said) == 2 and 'line 9: no file imgs/9.png' in said[0] and 'imgs/6.png' in said[1]
    assert [f for f, _ in data.skipped] == ['imgs/9.png', 'imgs/3.png', 'imgs/6.png']
    assert 'line 10: repeats line 5' in data.skipped[1][1]
    assert len(data.trn_ds) + len(data.val_ds) + len(data.skipped) == 9
    assert data.trn_ds.fnames == ['imgs/2.png', 'imgs/3.png', 'imgs/4.png', 'imgs/5.png']
    assert data.trn_y.tolist() == [0, 1, 0, 1] and data.classes == ['blue', 'red']
    with pytest.raises(LayoutError, match=r'2 of the 9 rows .*line 9: no file imgs/9.png'):
        ImageClassifierData.from_csv(str(tmp_path), 'imgs', 'labels.csv', suffix='.png',
                                     cache_size=8, on_bad='raise', quiet=True)
    assert np.asarray(data.trn_ds.x).shape == (4, 8, 8, 3)
